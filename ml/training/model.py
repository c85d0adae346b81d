"""The two-tower bi-encoder: one shared MiniLM encoder, a history tower and a query tower.

- item tower: encoder(item text), mean-pooled, L2-normalized; computed for the whole catalogue into
  `item_table` (a buffer, refreshed during training), which is also what FAISS searches at serving;
- query tower, search: encoder(query text), the same pooling;
- query tower, history: item vectors of the shopper's recent items pooled with learned recency weights
  (newest first), then a learned projection (initialized to the identity), normalized.

Score = dot(query, item) / temperature + a learned per-item bias. The loss is a softmax over the whole
catalogue per example, so no example's loss depends on another's: what DP-SGD's per-sample clipping needs.
Only the top `trainable_layers` encoder layers and the heads train (parameter-efficient fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedTokenizerBase

from ml.training.encoder import mean_pool, tokenize


class BiEncoder(nn.Module):
    def __init__(self, bert: BertModel, n_items: int, trainable_layers: int = 1, max_history: int = 10,
                 temperature: float = 0.05) -> None:
        super().__init__()
        self.bert = bert
        self.temperature = temperature
        self.max_history = max_history
        dim = bert.config.hidden_size
        for p in self.bert.parameters():
            p.requires_grad = False
        layers = self.bert.encoder.layer
        for layer in layers[len(layers) - trainable_layers:] if trainable_layers else []:
            for p in layer.parameters():
                p.requires_grad = True
        # recency weight of history position p (0 = newest); starts as a decay over positions
        self.recency = nn.Embedding(max_history, 1)
        with torch.no_grad():
            self.recency.weight.copy_(-0.3 * torch.arange(max_history, dtype=torch.float32).unsqueeze(1))
        self.history_proj = nn.Linear(dim, dim)
        with torch.no_grad():
            self.history_proj.weight.copy_(torch.eye(dim))
            self.history_proj.bias.zero_()
        # per-item bias, as a Linear over a constant input so that DP-SGD sees a per-sample gradient
        self.item_bias = nn.Linear(1, n_items, bias=False)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("item_table", torch.zeros(n_items, dim))

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        position_ids=position_ids)
        return mean_pool(out.last_hidden_state, attention_mask)

    def history_vector(self, hist_idx: torch.Tensor, hist_pos: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """hist_idx [B,H] item indices (newest first), hist_pos [B,H] positions, hist_mask [B,H] 1 = real item."""
        weights = self.recency(hist_pos).squeeze(-1).masked_fill(hist_mask == 0, -1e4)
        weights = torch.softmax(weights, dim=-1) * hist_mask
        vectors = self.item_table[hist_idx]  # [B,H,D], no gradient: the cached table
        pooled = (weights.unsqueeze(-1) * vectors).sum(dim=1)
        return F.normalize(self.history_proj(pooled), dim=-1)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text = self.encode_tokens(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                  batch["position_ids"])
        history = self.history_vector(batch["hist_idx"], batch["hist_pos"], batch["hist_mask"])
        is_search = batch["is_search"].unsqueeze(-1).to(text.dtype)
        return is_search * text + (1 - is_search) * history

    def item_biases(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return self.item_bias(torch.ones(batch_size, 1, device=device))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor, hist_idx: torch.Tensor, hist_pos: torch.Tensor, hist_mask: torch.Tensor,
                is_search: torch.Tensor) -> torch.Tensor:
        """Logits over the whole catalogue, one row per example."""
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "position_ids": position_ids, "hist_idx": hist_idx, "hist_pos": hist_pos,
                 "hist_mask": hist_mask, "is_search": is_search}
        q = self.query_vectors(batch)
        return q @ self.item_table.T / self.temperature + self.item_biases(q.shape[0], q.device)

    @torch.no_grad()
    def encode_texts(self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int,
                     batch_size: int = 128, progress: bool = False) -> torch.Tensor:
        """Encode texts in batches without gradients (items, queries at evaluation and serving)."""
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encode", disable=not progress, leave=False):
            tokens = tokenize(tokenizer, texts[start:start + batch_size], max_tokens)
            tokens = {k: v.to(device) for k, v in tokens.items()}
            out.append(self.encode_tokens(**tokens).float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def build_history_tensors(histories: Sequence[Sequence[int]], max_history: int) -> dict[str, torch.Tensor]:
    """Pad index histories (oldest first) into newest-first tensors with positions and a mask."""
    n = len(histories)
    idx = torch.zeros((n, max_history), dtype=torch.long)
    mask = torch.zeros((n, max_history), dtype=torch.float32)
    for row, hist in enumerate(histories):
        recent = list(hist)[-max_history:][::-1]
        if recent:
            idx[row, : len(recent)] = torch.tensor(recent, dtype=torch.long)
            mask[row, : len(recent)] = 1.0
    pos = torch.arange(max_history, dtype=torch.long).repeat(n, 1).contiguous()
    return {"hist_idx": idx, "hist_pos": pos, "hist_mask": mask}
