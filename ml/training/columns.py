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

    def history_products(self, history: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """[B, H, P + M] dot products of history item vectors [B, H, D] with the columns' items (per_row [B, P])."""
        parts = []
        if self.per_row is not None:
            parts.append(torch.einsum("bhd,bpd->bhp", history, item_table[self.per_row]))
        if self.shared is not None:
            parts.append(history @ item_table[self.shared].T)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
