"""The history-candidate features of the bi-encoder's behavioural score (`ml.training.model.BiEncoder`).

Each candidate item gets N_FEATURES numbers against a shopper's history, none of them learned: it shares a brand
with the history, repeats a history item, is in the newest item's category, has the newest item's brand, follows
the history in the released item-transition counts, its largest text similarity to one history item, and its
lexical (BM25) match to the history items. The model weighs them (`FeatureWeights`). They are computed for every
item (evaluation, serving) or at a few columns (training on sampled negatives, `ml.training.columns`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ml.training.columns import Columns, largest_over_history
from ml.training.item_table import ItemTable

# weight of the i-th newest history item in the transition feature
TRANSITION_DECAY = 0.6
# weight of the i-th newest history item in the lexical feature
LEXICAL_DECAY = 0.5


class HistoryFeatures:
    """The features, as a mixin of the model: they read its item table, catalogue codes and item x item tables."""

    item_table: torch.Tensor
    item_category: torch.Tensor
    item_brand: torch.Tensor
    transitions: ItemTable
    lexical: ItemTable
    text_features: bool

    @staticmethod
    def _per_example(
        table_fn: Callable[..., torch.Tensor], hist_idx: torch.Tensor, hist_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        """table_fn(hist_idx, hist_mask, **extra) over [B, H] histories, for [B, H] or grouped [B, K, H] ones (the
        result keeps B, K); each `extra` tensor has the same leading axes.

        Grouped, it runs on the slots with a history only (padding slots have none): table_fn must give 0
        for an empty history, as history_features does."""
        if hist_idx.dim() == 2:
            return table_fn(hist_idx, hist_mask, **extra)
        lead = hist_idx.shape[:2]
        flat_idx, flat_mask = hist_idx.reshape(-1, hist_idx.shape[-1]), hist_mask.reshape(-1, hist_mask.shape[-1])
        rows = (flat_mask[:, 0] > 0).nonzero().squeeze(1)
        part = table_fn(
            flat_idx[rows], flat_mask[rows], **{k: e.reshape(-1, *e.shape[2:])[rows] for k, e in extra.items()}
        )
        out = part.new_zeros(flat_idx.shape[0], *part.shape[1:]).index_copy(0, rows, part)
        return out.reshape(*lead, *out.shape[1:])

    def history_features(
        self,
        hist_idx: torch.Tensor,
        hist_mask: torch.Tensor,
        own_idx: torch.Tensor | None = None,
        own_val: torch.Tensor | None = None,
        closest: bool = True,
        per_row: torch.Tensor | None = None,
        shared: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, n_items, N_FEATURES] features of each candidate against the history (no learned part); at columns
        (`per_row` [B, P] and/or `shared` [M] items, `Columns`) [B, P + M, N_FEATURES].

        `own_idx`, `own_val` ([B, W]) are added to the transition feature at those items: in training, what the
        example's own shopper put into the counts is taken out (ml.privacy.transitions.transition_feature).
        `closest` False leaves the closest-similarity feature at 0: serving adds it for its candidates only
        (`candidate_scores`), the costliest feature over a whole catalogue."""
        real = hist_mask > 0
        columns = None if per_row is None and shared is None else Columns(per_row, shared)
        n_items = self.item_table.shape[0]
        cols = columns.index(hist_idx.shape[:1]) if columns is not None else None
        # one row of brand flags per history, read for every item: [B, n_brands], not [B, H, n_items]
        n_brands = int(self.item_brand.max().item()) + 1 if len(self.item_brand) else 1
        shared_brands = torch.zeros(hist_idx.shape[0], n_brands, device=hist_idx.device)
        shared_brands = shared_brands.scatter_add(1, self.item_brand[hist_idx], real.float()).clamp(max=1.0)
        last = hist_idx[:, 0]  # newest first
        own = None if own_idx is None or own_val is None else (own_idx, own_val.to(torch.float32))
        use_closest = closest and self.text_features
        if cols is None:
            brand_match = shared_brands.index_select(1, self.item_brand)  # a gather, faster than [:, item_brand]
            repeat = torch.zeros(hist_idx.shape[0], n_items, device=hist_idx.device)
            repeat = repeat.scatter_add(1, hist_idx, real.float()).clamp(max=1.0)  # padded slots add 0
            item_cat, item_brand = self.item_category.view(1, -1), self.item_brand.view(1, -1)
            transition = self.transitions.decayed_rows(hist_idx, real, TRANSITION_DECAY, n_items)
            if own is not None:
                transition = transition.scatter_add(1, *own)
            lexical = self.lexical.decayed_rows(hist_idx, real, LEXICAL_DECAY, n_items)
            closest_sim = self.closest_similarity(hist_idx, real) if use_closest else torch.zeros_like(repeat)
        else:
            assert columns is not None
            brand_match = shared_brands.gather(1, self.item_brand[cols])
            owner = torch.arange(hist_idx.shape[0], device=hist_idx.device).repeat_interleave(hist_idx.shape[1])
            hits = columns.collect(owner, hist_idx.reshape(-1), real.reshape(-1).float(), len(hist_idx), n_items)
            repeat = hits.clamp(max=1.0)
            item_cat, item_brand = self.item_category[cols], self.item_brand[cols]
            transition = self.transitions.decayed_at(hist_idx, real, TRANSITION_DECAY, columns, extra=own)
            lexical = self.lexical.decayed_at(hist_idx, real, LEXICAL_DECAY, columns)
            if use_closest:
                closest_sim = columns.closest(self.item_table[hist_idx], real, self.item_table)
            else:
                closest_sim = torch.zeros_like(repeat)
        same_cat = (self.item_category[last].unsqueeze(-1) == item_cat) & real[:, :1]
        last_brand = (self.item_brand[last].unsqueeze(-1) == item_brand) & real[:, :1]
        parts = [brand_match, repeat, same_cat.float(), last_brand.float(), transition, closest_sim, lexical]
        # the same [B, N, F] tensor as torch.stack(parts, dim=-1), built as [F, B, N] and transposed once: the
        # stack along the last axis interleaves element by element, several times slower on CPU
        return torch.stack(parts, dim=0).permute(1, 2, 0).contiguous()

    def closest_similarity(self, hist_idx: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[B, n_items] the largest cosine between each item and any real history item (0 without history)."""
        return self._closest(self.item_table[hist_idx] @ self.item_table.T, real)  # the cached (normalized) vectors

    _closest = staticmethod(largest_over_history)
