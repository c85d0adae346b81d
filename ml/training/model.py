"""The two-tower bi-encoder: one shared MiniLM encoder, a history tower and a query tower.

- item tower: encoder(item text), mean-pooled, L2-normalized; computed for the whole catalogue into
  `item_table` (a buffer, refreshed during training), which is also what serving's dense search scans;
- query tower, search: encoder(query text), the same pooling;
- query tower, history: item vectors of the shopper's recent items pooled with learned recency weights
  (newest first), then a learned projection (initialized to the identity), normalized.

Score = content scale x dot(query, item) / temperature + a per-item bias, and for a history query also a
behavioural part (the hybrid): a learned category -> next-category table, and learned weights on
history-candidate features: the candidate shares a brand with the history or with the last item, repeats
a history item, stays in the last item's category, follows the history in the item-transition counts
(released by their own Gaussian mechanism, ml.privacy.accounting), is close in text to one history item,
or matches the history items' words (BM25). All but the transition counts come from the public catalogue
and the shopper's own history. Untrained (content scale 1, every feature weight 0, recency halving per
position, projection = identity, no bias), the model ranks exactly as the zero-shot encoder: training
only adds to that prior; under DP the dense heads stay fixed (`freeze_dense_heads`). DP-SGD and the
transition counts are composed into one epsilon.

The loss is a softmax over the whole catalogue per example, so no example's loss depends on another's:
what DP-SGD's per-sample clipping needs. A batch may group each shopper's examples in one row (`forward`),
and the sample clipped is then the shopper. Only the top `trainable_layers` encoder layers and the heads
train (parameter-efficient fine-tuning).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedTokenizerBase

from ml.training.columns import Columns
from ml.training.encoder import mean_pool, tokenize
from ml.training.heads import ContentScale, FeatureWeights
from ml.training.history_features import HistoryFeatures
from ml.training.item_table import ItemTable

# initial recency logits: RECENCY_INIT * position, i.e. weights halving per step back, as the zero-shot
# baseline pools (ml.evaluation.baselines.ZeroShot): the untrained model ranks exactly as zero-shot MiniLM
RECENCY_INIT = -math.log(2.0)


class BiEncoder(HistoryFeatures, nn.Module):
    # brand shared with the history, item repeated from the history, same category as the last item,
    # same brand as the last item, item-transition score (DP-noised counts, when given), and the largest
    # text similarity to any one history item (the pooled history vector blurs a shopper of two interests),
    # and the lexical (BM25) match between the candidate and the history items (model numbers, sizes and part
    # names that the sentence encoder smooths over); both from the public catalogue alone
    N_FEATURES = 7
    CLOSEST = 5  # the closest-similarity feature's position

    # buffers (register_buffer), declared so that they read as tensors
    item_table: torch.Tensor
    item_category: torch.Tensor
    item_brand: torch.Tensor

    def __init__(
        self,
        bert: BertModel,
        n_items: int,
        trainable_layers: int = 1,
        max_history: int = 10,
        temperature: float = 0.05,
        item_category: torch.Tensor | None = None,
        item_brand: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.bert = bert
        self.temperature = temperature
        self.max_history = max_history
        dim = bert.config.hidden_size
        for p in self.bert.parameters():
            p.requires_grad = False
        layers = self.bert.encoder.layer
        for layer in layers[len(layers) - trainable_layers :] if trainable_layers else []:
            for p in layer.parameters():
                p.requires_grad = True
        # recency weight of history position p (0 = newest); starts as a decay over positions
        self.recency = nn.Embedding(max_history, 1)
        with torch.no_grad():
            self.recency.weight.copy_(RECENCY_INIT * torch.arange(max_history, dtype=torch.float32).unsqueeze(1))
        self.history_proj = nn.Linear(dim, dim)
        with torch.no_grad():
            self.history_proj.weight.copy_(torch.eye(dim))
            self.history_proj.bias.zero_()
        # per-item bias, as a Linear over a constant input so that DP-SGD sees a per-sample gradient
        self.item_bias = nn.Linear(1, n_items, bias=False)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("item_table", torch.zeros(n_items, dim))
        # public catalogue fields as integer codes (0 when unknown)
        cats = item_category if item_category is not None else torch.zeros(n_items, dtype=torch.long)
        brands = item_brand if item_brand is not None else torch.zeros(n_items, dtype=torch.long)
        self.register_buffer("item_category", cats.long())
        self.register_buffer("item_brand", brands.long())
        n_cat = int(cats.max().item()) + 1 if len(cats) else 1
        self.category_transition = nn.Embedding(n_cat, n_cat)
        nn.init.zeros_(self.category_transition.weight)
        self.feature_weights = FeatureWeights(self.N_FEATURES)
        self.content_scale = ContentScale()
        self.text_features = True  # the closest-item and lexical features (see `drop_text_features`)
        # log1p of item -> next-item counts, released by their own DP mechanism; sparse, empty when unused
        self.transitions = ItemTable()
        # lexical (BM25) neighbours of each item (`ml.item_tables.lexical_neighbours`); sparse, empty when unused
        self.lexical = ItemTable()
        # DP-SGD with a trained item bias needs its per-sample gradient: set by the trainer (`item_biases`)
        self.per_sample_bias = False

    def freeze_dense_heads(self) -> None:
        """Keep the history projection at its value (the identity) and the item bias at zero: for DP-SGD.

        Under DP every trained coordinate gets the same Gaussian noise, whatever its signal. The projection
        (dim x dim) and the item bias (one per item) carry little signal per coordinate with a few thousand
        shoppers, so training them adds mostly noise (on amazon2018 it pulled the model below the zero-shot
        encoder it starts from; no results file keeps that run) and takes a share of each shopper's clipped
        gradient from the scalar heads that do learn (feature weights, content scale, recency, category
        transitions).
        """
        for p in (*self.history_proj.parameters(), *self.item_bias.parameters()):
            p.requires_grad = False

    def drop_text_features(self) -> None:
        """Train without the closest-item and lexical features and with the content scale fixed at 1.

        For DP steps quiet enough that the projection and the item bias learn (`freeze_dense_heads` is for
        the others): on the synthetic demo (generated item texts) DP-SGD gave these public text features
        negative weights and a lower NDCG@10 than without them (no results file keeps that run).
        Call `zero_dropped_weights` after training so that the saved model needs no flag."""
        self.text_features = False
        self.lexical.clear()
        self.content_scale.log_scale.requires_grad = False

    @torch.no_grad()
    def zero_dropped_weights(self) -> None:
        """Zero the weights of dropped text features (DP noise moved them; their features were 0)."""
        if not self.text_features:
            self.feature_weights.weight[5:] = 0.0
            self.text_features = True  # same scores now: the weights are 0 and there is no lexical table

    @torch.no_grad()
    def fold_content_scale(self) -> float:
        """Move the learned content scale into the temperature (scale 1 again) and return the temperature.

        The saved model then scores with `temperature` alone, which is what the search path reads
        (`Recommender.augmented_queries`)."""
        self.temperature = float(self.temperature / self.content_scale.log_scale.exp().item())
        self.content_scale.log_scale.zero_()
        return self.temperature

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def encode_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
        )
        return mean_pool(out.last_hidden_state, attention_mask)

    def history_vector(self, hist_idx: torch.Tensor, hist_pos: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """hist_idx [B,H] item indices (newest first), hist_pos [B,H] positions, hist_mask [B,H] 1 = real item
        (or [B,K,H] each: K examples per row, see `forward`)."""
        weights = self.recency(hist_pos).squeeze(-1).masked_fill(hist_mask == 0, -1e4)
        weights = torch.softmax(weights, dim=-1) * hist_mask
        vectors = self.item_table[hist_idx]  # [B,H,D], no gradient: the cached table
        pooled = (weights.unsqueeze(-1) * vectors).sum(dim=-2)
        return F.normalize(self.history_proj(pooled), dim=-1)

    @property
    def text_tower_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.bert.parameters())

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if batch.get("query_vec") is not None:  # precomputed: the encoder is frozen
            text = batch["query_vec"]
        else:
            text = self.encode_tokens(
                batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["position_ids"]
            )
        history = self.history_vector(batch["hist_idx"], batch["hist_pos"], batch["hist_mask"])
        is_search = batch["is_search"].unsqueeze(-1).to(text.dtype)
        return is_search * text + (1 - is_search) * history

    def forward(
        self,
        hist_idx: torch.Tensor,
        hist_pos: torch.Tensor,
        hist_mask: torch.Tensor,
        is_search: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        query_vec: torch.Tensor | None = None,
        own_idx: torch.Tensor | None = None,
        own_val: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits over the whole catalogue, one row per example; or, with `negatives` [M] (a uniform sample of
        items, `ml.training.negatives`) and `target`, over [the example's target, the M negatives]: the target's
        logit in column 0. Search text comes as tokens, or as precomputed vectors (`query_vec`) when the encoder is
        frozen. In training, `own_idx`/`own_val` take the example's shopper's own pairs out of its transition
        feature (`history_features`).

        Grouped: with a frozen encoder every input may carry a second axis of examples ([B, K, H] histories,
        [B, K] flags, [B, K, D] query vectors; logits [B, K, n_items]). Each row is then one shopper's K
        examples, and every trained layer sees the shopper as its batch axis, so DP-SGD's per-sample gradient
        is the shopper's gradient over all K (ml.training.train)."""
        # the token entries are None only when `query_vec` is given, and query_vectors then does not read them
        batch = cast(
            dict[str, torch.Tensor],
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
                "position_ids": position_ids,
                "hist_idx": hist_idx,
                "hist_pos": hist_pos,
                "hist_mask": hist_mask,
                "is_search": is_search,
                "query_vec": query_vec,
            },
        )
        q = self.query_vectors(batch)
        if negatives is None:
            return self.logits(q, hist_idx, hist_mask, is_search, own_idx, own_val)
        if target is None:
            raise ValueError("scoring sampled negatives needs each example's target")
        from ml.training.negatives import sampled_logits

        columns = Columns(per_row=target.clamp(min=0).unsqueeze(-1), shared=negatives)
        scores = self.logits(q, hist_idx, hist_mask, is_search, own_idx, own_val, columns)
        return sampled_logits(scores, target, negatives, self.item_table.shape[0])

    def text_scores(self, q: torch.Tensor, columns: Columns | None = None) -> torch.Tensor:
        """The text part of the score of every item ([B, (K,) n_items]), or of `columns` ([B, (K,) P + M]):
        content scale x dot(query, item) / temperature."""
        return self._text(q @ self.item_table.T if columns is None else columns.products(q, self.item_table))

    def _text(self, products: torch.Tensor) -> torch.Tensor:
        return self.content_scale(products / self.temperature)

    def candidate_scores(
        self, q: torch.Tensor, hist_idx: torch.Tensor, real: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """[B, M] the text part and the weighted closest-similarity feature of items `rows` [B, M] (a history
        query): what `behaviour_scores(closest=False)` leaves out, for a few candidates. One product of the
        query and the history items with the candidates' vectors."""
        stacked = torch.cat([q.unsqueeze(1), self.item_table[hist_idx]], dim=1)  # [B, 1 + H, D]
        # index_select, not item_table[rows]: the same rows, several times faster to gather on CPU
        candidates = self.item_table.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)  # [B, M, D]
        products = stacked @ candidates.transpose(1, 2)  # [B, 1 + H, M]
        text = self._text(products[:, 0])
        if not self.text_features:
            return text
        return text + self.feature_weights.weight[self.CLOSEST] * self._closest(products[:, 1:], real)

    def behaviour_scores(
        self,
        hist_idx: torch.Tensor,
        hist_mask: torch.Tensor,
        is_search: torch.Tensor,
        own_idx: torch.Tensor | None = None,
        own_val: torch.Tensor | None = None,
        closest: bool = True,
        columns: Columns | None = None,
    ) -> torch.Tensor:
        """The behavioural part of the score of every item ([B, (K,) n_items]), or of `columns`: the category
        transition from the newest item and the weighted history features, 0 for a search or an empty history."""
        has_history = (hist_mask[..., :1] > 0).float() * (1 - is_search.unsqueeze(-1).float())
        last_cat = self.item_category[hist_idx[..., 0]]
        by_category = self.category_transition(last_cat)  # [B, (K,) n_cat]
        extra = {} if own_idx is None or own_val is None else {"own_idx": own_idx, "own_val": own_val}
        if columns is None:
            transition = by_category.index_select(-1, self.item_category)  # [B, (K,) n_items]
        else:
            transition = by_category.gather(-1, self.item_category[columns.index(hist_idx.shape[:-1])])
            if columns.per_row is not None:
                extra["per_row"] = columns.per_row
        shared = None if columns is None else columns.shared
        features = functools.partial(self.history_features, closest=closest, shared=shared)
        weighted = self.feature_weights(self._per_example(features, hist_idx, hist_mask, **extra))
        return has_history * (transition + weighted)

    def set_lexical(self, table: Any) -> None:
        """Install the item x item lexical neighbours (`ml.item_tables.lexical_neighbours`: a scipy sparse matrix,
        public catalogue text only)."""
        self.lexical.load(table, self.item_table.shape[0])

    def set_transitions(self, table: Any) -> None:
        """Install log1p(item -> next-item counts), a scipy sparse matrix (already privatized by the caller,
        `ml.privacy.transitions.transition_feature`)."""
        self.transitions.load(table, self.item_table.shape[0])

    def item_biases(self, batch_size: int, device: torch.device, columns: Columns | None = None) -> torch.Tensor:
        """The item bias of every item, [B, n_items], or at `columns` [B, (K,) P + M]. A per-sample gradient
        (DP-SGD with a trained bias, `per_sample_bias`) needs the bias to come out of its layer for every item."""
        if columns is None or (self.per_sample_bias and self.item_bias.weight.requires_grad):
            full = self.item_bias(torch.ones(batch_size, 1, device=device))  # [B, n_items]
            if columns is None:
                return full
            index = columns.index((batch_size,) if columns.per_row is None else columns.per_row.shape[:-1])
            return full.gather(1, index.reshape(batch_size, -1)).view(index.shape)
        lead = (batch_size,) if columns.per_row is None else columns.per_row.shape[:-1]
        return self.item_bias.weight[:, 0][columns.index(lead)]

    def logits(
        self,
        q: torch.Tensor,
        hist_idx: torch.Tensor,
        hist_mask: torch.Tensor,
        is_search: torch.Tensor,
        own_idx: torch.Tensor | None = None,
        own_val: torch.Tensor | None = None,
        columns: Columns | None = None,
    ) -> torch.Tensor:
        """The full score of every catalogue item (or of `columns`) for each query vector and its history: the text
        part, the item bias and the behavioural part. The one definition of the score: evaluation reads it whole,
        serving reads the same parts (`ml.serving.scorer`)."""
        bias = self.item_biases(q.shape[0], q.device, columns)  # [B, n_items] or [B, (K,) P + M]
        if q.dim() == 3 and bias.dim() == 2:  # grouped: one bias row per shopper, shared by its K examples
            bias = bias.unsqueeze(1)
        scores = self.text_scores(q, columns) + bias
        return scores + self.behaviour_scores(hist_idx, hist_mask, is_search, own_idx, own_val, columns=columns)

    @torch.no_grad()
    def encode_texts(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        max_tokens: int,
        batch_size: int = 128,
        progress: bool = False,
    ) -> torch.Tensor:
        """Encode texts in batches without gradients (items, queries at evaluation and serving)."""
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encode", disable=not progress, leave=False):
            tokens = tokenize(tokenizer, texts[start : start + batch_size], max_tokens)
            tokens = {k: v.to(device) for k, v in tokens.items()}
            out.append(self.encode_tokens(**tokens).float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def catalogue_codes(items: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes of each item's category and brand (public fields), in catalogue order."""
    cats = pd.factorize(items["category"].fillna("").astype(str), sort=True)[0]
    brands = pd.factorize(items["brand"].fillna("").astype(str), sort=True)[0]
    return torch.as_tensor(cats, dtype=torch.long), torch.as_tensor(brands, dtype=torch.long)


def build_history_tensors(histories: Sequence[Sequence[int]], max_history: int) -> dict[str, torch.Tensor]:
    """Pad index histories (oldest first) into newest-first tensors with positions and a mask."""
    n = len(histories)
    idx = np.zeros((n, max_history), dtype=np.int64)
    mask = np.zeros((n, max_history), dtype=np.float32)
    for row, hist in enumerate(histories):
        recent = list(hist)[-max_history:][::-1]
        idx[row, : len(recent)] = recent
        mask[row, : len(recent)] = 1.0
    pos = torch.arange(max_history, dtype=torch.long).repeat(n, 1).contiguous()
    return {"hist_idx": torch.from_numpy(idx), "hist_pos": pos, "hist_mask": torch.from_numpy(mask)}
