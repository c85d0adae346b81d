"""Which items a score is read at: the whole catalogue, or a few columns (training on sampled negatives).

Training on a large catalogue scores each example's target and a uniform sample of negatives
(`ml.training.negatives`), not every item, so a step's work does not grow with the catalogue. The columns are
the example's own items first (`per_row`, its target) and then items shared by every example of the batch
(`shared`, the negatives); a score read at columns is [B, (K,) P + M]. The costly parts of the score (the text
product and the closest-history-item similarity) read the shared items with one matrix product for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Columns:
    """per_row: [B, (K,) P] items of each example; shared: [M] items of every example. At least one is given."""

    per_row: torch.Tensor | None = None
    shared: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.per_row is None and self.shared is None:
            raise ValueError("Columns needs per_row or shared items (None for the whole catalogue)")
        if self.shared is not None and self.shared.dim() != 1:
            raise ValueError(f"shared columns are one list of items, got shape {tuple(self.shared.shape)}")

    def index(self, lead: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """[*lead, P + M] the item of each column, for examples with leading axes `lead` ([B] or [B, K])."""
        parts = []
        if self.per_row is not None:
            parts.append(self.per_row)
        if self.shared is not None:
            parts.append(self.shared.expand(*lead, len(self.shared)))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def products(self, vectors: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """[..., P + M] dot products of `vectors` [..., D] (leading axes as per_row's) with the columns' items."""
        parts = []
        if self.per_row is not None:
            parts.append((vectors.unsqueeze(-2) * item_table[self.per_row]).sum(-1))
        if self.shared is not None:
            parts.append(vectors @ item_table[self.shared].T)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def closest(self, history: torch.Tensor, real: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """[B, P + M] the largest dot product of each column's item with a real history item (history item vectors
        [B, H, D], real [B, H]; per_row [B, P]); 0 for an empty history. Each part is reduced over the history
        before the parts are joined: [B, H, M] products are never copied."""
        parts = []
        if self.per_row is not None:
            parts.append(largest_over_history(torch.einsum("bhd,bpd->bhp", history, item_table[self.per_row]), real))
        if self.shared is not None:
            parts.append(largest_over_history(history @ item_table[self.shared].T, real))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def collect(
        self, owner: torch.Tensor, items: torch.Tensor, values: torch.Tensor, b_count: int, n_items: int
    ) -> torch.Tensor:
        """[B, P + M] the sum of the entries (example `owner`, item, value) at each column of their example whose
        item is the entry's: a sparse [B, n_items] row read at the columns without building it. Cost: the
        entries times P, plus n_items once for the shared columns' positions."""
        parts = []
        if self.per_row is not None:
            per_row = self.per_row.reshape(b_count, -1)
            match = (items.unsqueeze(1) == per_row[owner]).to(values.dtype)  # [E, P]
            parts.append(torch.zeros(per_row.shape, device=values.device).index_add_(0, owner, match * values[:, None]))
        if self.shared is not None:
            position = torch.full((n_items,), -1, dtype=torch.long, device=items.device)
            position[self.shared] = torch.arange(len(self.shared), device=items.device)
            at = position[items]
            keep = at >= 0
            out = torch.zeros(b_count, len(self.shared), device=values.device)
            parts.append(out.index_put_((owner[keep], at[keep]), values[keep], accumulate=True))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def largest_over_history(sims: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, M] from [B, H, M] similarities of the history items to M items: the largest over real ones (0 without)."""
    return sims.masked_fill(~real.unsqueeze(-1), -2.0).amax(dim=1).masked_fill(~real[:, :1], 0.0)
