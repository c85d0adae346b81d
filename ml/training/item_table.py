"""An item x item table the model reads by history rows, held sparse: memory grows with its entries, not with the
square of the catalogue.

The model has two such tables (`ml.training.model.BiEncoder`): the released item-transition counts
(`ml.privacy.transitions`) and the lexical neighbours of each item (`ml.item_tables.lexical_neighbours`). A
history's feature is the decayed sum of the table rows of its items, newest first; it is read either for every
item (evaluation) or only at a few columns (training on sampled negatives, `ml.training.negatives`). The table is
compressed sparse rows in three buffers, so it saves and loads with the model's state dict and moves with it
between devices; `to_scipy` gives the same table to numpy code (the DP baselines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ml.training.columns import Columns


class ItemTable(nn.Module):
    """A sparse [n, n] table of float32 values, compressed sparse rows. Empty (n = 0) when the model has none."""

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("indptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("indices", torch.zeros(0, dtype=torch.long))
        self.register_buffer("values", torch.zeros(0, dtype=torch.float32))

    @property
    def size(self) -> int:
        """n, the rows (and columns) of the table; 0 when unused."""
        return len(self.indptr) - 1

    @property
    def used(self) -> bool:
        return self.size > 0

    @property
    def nnz(self) -> int:
        return len(self.values)

    def load(self, table: Any, n_items: int) -> None:
        """Install a scipy sparse matrix (any format) or a dense array of shape (n_items, n_items)."""
        from scipy import sparse

        if isinstance(table, torch.Tensor):
            table = table.detach().cpu().numpy()
        csr = sparse.csr_matrix(table, dtype=np.float32)
        if csr.shape != (n_items, n_items):
            raise ValueError(f"an item table must be {n_items} x {n_items}, got {csr.shape[0]} x {csr.shape[1]}")
        csr.eliminate_zeros()
        csr.sort_indices()
        device = self.indptr.device
        self.indptr = torch.as_tensor(csr.indptr.astype(np.int64), device=device)
        self.indices = torch.as_tensor(csr.indices.astype(np.int64), device=device)
        self.values = torch.as_tensor(csr.data.astype(np.float32), device=device)

    def clear(self) -> None:
        device = self.indptr.device
        self.indptr = torch.zeros(1, dtype=torch.long, device=device)
        self.indices = torch.zeros(0, dtype=torch.long, device=device)
        self.values = torch.zeros(0, dtype=torch.float32, device=device)

    def to_scipy(self) -> Any:
        """The table as a scipy csr_matrix (float32), for numpy code."""
        from scipy import sparse

        n = self.size
        return sparse.csr_matrix(
            (self.values.cpu().numpy(), self.indices.cpu().numpy(), self.indptr.cpu().numpy()), shape=(n, n)
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Size the buffers to the saved table's before loading it."""
        for name in ("indptr", "indices", "values"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(saved, device=self.indptr.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _entries(self, rows: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The entries of the table rows `rows` [B, H], each scaled by its weight [B, H] (0 skips the row):
        (which history b, column, weighted value), one per stored entry of each weighted row."""
        b_count, h_count = rows.shape
        flat_rows, flat_w = rows.reshape(-1), weights.reshape(-1)
        starts = self.indptr[flat_rows]
        lengths = (self.indptr[flat_rows + 1] - starts) * (flat_w != 0)
        owner = torch.repeat_interleave(torch.arange(len(flat_rows), device=rows.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        offsets = torch.arange(len(owner), device=rows.device) - first[owner]
        at = starts[owner] + offsets
        return owner // h_count, self.indices[at], self.values[at] * flat_w[owner]

    def decayed_rows(self, rows: torch.Tensor, real: torch.Tensor, decay: float, n_items: int) -> torch.Tensor:
        """[B, n_items]: for each history (rows [B, H], newest first; real [B, H] marks the items, not padding)
        the sum over its items at position p of decay**p x the item's table row. Zeros when the table is unused."""
        out = torch.zeros(rows.shape[0], n_items, device=rows.device)
        if not self.used:
            return out
        history, cols, vals = self._entries(rows, self._weights(rows, real, decay))
        return out.index_put_((history, cols), vals, accumulate=True)

    def decayed_at(
        self,
        rows: torch.Tensor,
        real: torch.Tensor,
        decay: float,
        columns: Columns,
        extra: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`decayed_rows` read only at `columns` (`Columns`, per_row [B, P]): [B, P + M], without building the
        [B, n_items] rows. `extra` ([B, W] items, [B, W] values) adds those entries to each history's row first
        (training's own-pair corrections, ml.privacy.transitions)."""
        b_count = rows.shape[0]
        if not self.used:
            return torch.zeros(columns.index((b_count,)).shape, device=rows.device)
        history, items, values = self._entries(rows, self._weights(rows, real, decay))
        if extra is not None:
            extra_items, extra_values = extra
            owners = torch.arange(b_count, device=rows.device).repeat_interleave(extra_items.shape[1])
            history = torch.cat([history, owners])
            items = torch.cat([items, extra_items.reshape(-1)])
            values = torch.cat([values, extra_values.reshape(-1).to(values.dtype)])
        return columns.collect(history, items, values, b_count, self.size)

    @staticmethod
    def _weights(rows: torch.Tensor, real: torch.Tensor, decay: float) -> torch.Tensor:
        decays = decay ** torch.arange(rows.shape[1], device=rows.device, dtype=torch.float32)
        return real.float() * decays
