"""Item x item tables as sparse matrices, and the recency-weighted reads of them a history needs.

A dense [n, n] float32 table of a 200,000-item catalogue is 160 GB; the platform's budget is 24 GB. Every table
here is a `scipy.sparse.csr_matrix` (float32, shape (n, n)) that keeps only what the consumer reads:

- `lexical_neighbours`: each item's BM25 neighbours by text (public catalogue text only, no privacy cost), the
  sparse replacement of the dense lexical similarity. Each title is scored alone from the posting lists of its
  words, so memory holds one query's scores beside the sparse result.
- `decayed_rows`: the sum over a history's items (newest first) of decay**position times the item's row of a
  table, every column ([B, n], for a ranking over the catalogue): the co-occurrence baseline's score. The model
  reads its own copy of the tables (`ml.training.item_table.ItemTable`).

How close the neighbour lists are to the dense similarity, and their time and memory at 20k/100k/200k items:
benchmarks/results/item-tables.md (benchmarks/item_tables.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

# Neighbours kept per item by lexical_neighbours. The consumer reads the similarity of a candidate to the few
# items of a history, and a candidate outside an item's best lexical matches contributes close to nothing there;
# 100 finds nearly all of each row's dense top-10 on amazon2018-industrial (the rest of the dense mass is spread
# thin over many weak matches; benchmarks/results/item-tables.md) while the table holds at most 2 x 100 entries
# per item, and doubling it doubles the table for little more of the top-10.
TOP_N = 100


def lexical_neighbours(titles: Sequence[str], texts: Sequence[str], top_n: int = TOP_N) -> sparse.csr_matrix:
    """Each item's `top_n` best lexical matches, both ways, as a float32 csr (n, n).

    R[i, j] is the BM25 (Okapi) score of j's text for i's title as the query, divided by i's largest score,
    kept only for i's `top_n` best-scoring j with a positive score (equal scores at the cut: the lower j).
    The result is (R + R.T) / 2 over the union of both directions' entries: a direction that is not among the
    other item's top_n counts as 0 there (the dense similarity would have its score). With top_n >= n this is
    the dense similarity (up to float32 rounding).

    Each title is scored alone by `BM25Index.top`, which adds up the posting lists of its words: memory holds
    one query's [n] scores beside the result (not a chunk of dense [rows, n] scores), and the time follows the
    posting lists; the chunked dense alternative was slower (benchmarks/results/item-tables.md)."""
    from ml.lexical import BM25Index, words

    if len(titles) != len(texts):
        raise ValueError(f"need one title per item text, got {len(titles)} titles and {len(texts)} texts")
    if int(top_n) < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    n = len(texts)
    index = BM25Index(texts)
    cols, vals = [], []
    sizes = np.zeros(n, dtype=np.int64)
    for i, title in enumerate(titles):
        found, scores = index.top(words(title), int(top_n))  # best first: scores[0] is the row's largest
        if len(found):
            cols.append(found)
            vals.append(scores / scores[0])
            sizes[i] = len(found)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    data = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, dtype=np.float32)
    indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    forward = sparse.csr_matrix((data, indices, indptr), shape=(n, n))
    both = ((forward + forward.T.tocsr()) * np.float32(0.5)).tocsr().astype(np.float32)
    both.sort_indices()
    return both


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
    used, position = np.unique(items, return_inverse=True)  # only the rows the histories read are touched
    mix = sparse.csr_matrix((weights, (b, position)), shape=(n_hist, len(used)))
    return np.asarray((mix @ csr[used].astype(np.float64)).toarray(), dtype=np.float32)
