"""Item x item tables as sparse matrices, and the recency-weighted reads of them a history needs.

A dense [n, n] float32 table of a 200,000-item catalogue is 160 GB; the platform's budget is 24 GB. Every table
here is a `scipy.sparse.csr_matrix` (float32, shape (n, n)) that keeps only what the consumer reads:

- `lexical_neighbours`: each item's BM25 neighbours by text (public catalogue text only, no privacy cost), the
  sparse replacement of the dense lexical similarity. Queries are scored a chunk of rows at a time, so memory
  holds one chunk's dense scores beside the sparse result.
- `decayed_rows` / `decayed_at`: the sum over a history's items (newest first) of decay**position times the
  item's row of a table, either every column ([B, n], for a ranking over the catalogue) or a few columns per
  history ([B, M], for scoring candidates) without building [B, n].

How close the neighbour lists are to the dense similarity, and their time and memory at 20k/100k/200k items:
benchmarks/results/item-tables.md (benchmarks/item_tables.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

# Neighbours kept per item by lexical_neighbours. The consumer reads the similarity of a candidate to the few
# items of a history, and a candidate outside an item's top 100 lexical matches contributes close to nothing
# there; 100 keeps nearly all of each row's top-10 and most of the dense table's mass on amazon2018-industrial
# (benchmarks/results/item-tables.md) while the table stays at most 2 x 100 x n entries (160 MB at 200k items).
TOP_N = 100
# Dense cells of query scores held at once (float64 inside BM25Index.scores, float32 here): 2**24 cells is
# 128 MB + 64 MB, whatever the catalogue size; a chunk is max(1, CHUNK_CELLS // n) query rows.
CHUNK_CELLS = 2**24


def lexical_neighbours(titles: Sequence[str], texts: Sequence[str], top_n: int = TOP_N) -> sparse.csr_matrix:
    """Each item's `top_n` best lexical matches, both ways, as a float32 csr (n, n).

    R[i, j] is the BM25 (Okapi) score of j's text for i's title as the query, divided by i's largest score,
    kept only for i's `top_n` best-scoring j with a positive score (equal scores at the cut: the lower j).
    The result is (R + R.T) / 2 over the union of both directions' entries: a direction that is not among the
    other item's top_n counts as 0 there (the dense similarity would have its score). With top_n >= n this is
    the dense similarity exactly (up to float32 rounding of the mean)."""
    from ml.lexical import BM25Index, words

    if len(titles) != len(texts):
        raise ValueError(f"need one title per item text, got {len(titles)} titles and {len(texts)} texts")
    if int(top_n) < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    n = len(texts)
    index = BM25Index(texts)
    queries = [words(t) for t in titles]
    chunk = max(1, CHUNK_CELLS // n)
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        scores = index.scores(queries[start : start + chunk], dtype=np.float32, block=chunk)
        r, c, v = _row_tops(scores, int(top_n))
        top = scores.max(axis=1)
        rows.append(r + start)
        cols.append(c)
        vals.append(v / top[r])
    forward = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
    )
    both = ((forward + forward.T) * np.float32(0.5)).tocsr()
    both.sort_indices()
    return both.astype(np.float32)


def _row_tops(scores: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of each row's top_n positive scores; equal scores at the cut: the lower column
    (np.argpartition alone leaves that to the CPU's sorting kernel, see ml.topk)."""
    n_rows, n_cols = scores.shape
    if top_n < n_cols:
        kth = np.partition(scores, n_cols - top_n, axis=1)[:, n_cols - top_n]
        keep = (scores >= kth[:, None]) & (scores > 0)
    else:
        keep = scores > 0
    rows, cols = np.nonzero(keep)  # by row, then column
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    # rank within the row: more than top_n candidates only where ties straddle the cut
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    first = rank < top_n
    return rows[first], cols[first], vals[first]


def _history_weights(
    table: sparse.spmatrix, rows: np.ndarray, real: np.ndarray, decay: float
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs: the csr table, and per real history position its (history, item row, decay**position)."""
    if not sparse.issparse(table) or table.ndim != 2:
        raise TypeError(f"the table must be a 2-d scipy sparse matrix, got {type(table).__name__}")
    rows, real = np.asarray(rows), np.asarray(real)
    if rows.ndim != 2 or rows.shape != real.shape:
        raise ValueError(f"rows and real must be [B, H] of the same shape, got {rows.shape} and {real.shape}")
    if real.dtype != np.bool_:
        raise ValueError(f"real must be a bool mask, got dtype {real.dtype}")
    if not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must hold integer item indices, got dtype {rows.dtype}")
    decay = float(decay)
    if not np.isfinite(decay):
        raise ValueError(f"decay must be finite, got {decay}")
    b, p = np.nonzero(real)
    items = rows[b, p].astype(np.int64)
    n_rows = table.shape[0]
    if len(items) and (items.min() < 0 or items.max() >= n_rows):
        raise ValueError(f"history item indices must lie in [0, {n_rows}), got {items.min()}..{items.max()}")
    weights = np.power(decay, p.astype(np.float64))
    return sparse.csr_matrix(table), b, items, weights


def decayed_rows(table: sparse.spmatrix, rows: np.ndarray, real: np.ndarray, decay: float) -> np.ndarray:
    """[B, n] float32: for each history b, the sum over its real positions p (0 = newest) of
    decay**p * table[rows[b, p]]. A position repeated in a history counts each time; a history with no real
    position gives zeros. Summed in float64, one sparse product."""
    csr, b, items, weights = _history_weights(table, rows, real, decay)
    n_hist = np.asarray(rows).shape[0]
    mix = sparse.csr_matrix((weights, (b, items)), shape=(n_hist, csr.shape[0]))
    return np.asarray((mix @ csr.astype(np.float64)).toarray(), dtype=np.float32)


def decayed_at(
    table: sparse.spmatrix, rows: np.ndarray, real: np.ndarray, decay: float, columns: np.ndarray
) -> np.ndarray:
    """[B, M] float32: `decayed_rows(table, rows, real, decay)` read only at `columns` ([B, M] int), without
    building [B, n]: it looks up the B x H x M (item, column) entries of the csr directly."""
    csr, b, items, weights = _history_weights(table, rows, real, decay)
    columns = np.asarray(columns)
    if columns.ndim != 2 or columns.shape[0] != np.asarray(rows).shape[0]:
        raise ValueError(f"columns must be [B, M] with B = {np.asarray(rows).shape[0]}, got {columns.shape}")
    if not np.issubdtype(columns.dtype, np.integer):
        raise ValueError(f"columns must hold integer item indices, got dtype {columns.dtype}")
    n_cols = csr.shape[1]
    if columns.size and (columns.min() < 0 or columns.max() >= n_cols):
        raise ValueError(f"columns must lie in [0, {n_cols}), got {columns.min()}..{columns.max()}")
    out = np.zeros(columns.shape, dtype=np.float64)
    if len(items) == 0 or columns.shape[1] == 0:
        return out.astype(np.float32)
    m = columns.shape[1]
    # one lookup per (real history position, column of that history): table[item, column]
    look_rows = np.repeat(items, m)
    look_cols = columns[b].reshape(-1)
    found = np.asarray(csr[look_rows, look_cols], dtype=np.float64).reshape(len(items), m)
    np.add.at(out, b, weights[:, None] * found)
    return out.astype(np.float32)
