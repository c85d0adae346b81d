"""Top-k selection that gives the same answer on every machine: the one tie rule of evaluation and serving.

numpy's `argpartition` and its default `argsort` leave the order of equal values to the sorting kernel, and
numpy picks that kernel by what the CPU offers (AVX-512 or not). Equal scores are common (items with the same
text, items a baseline knows nothing about), and the same code and data ranked some cases differently from
one machine to the next (a baseline's NDCG@10 moved in the fourth decimal with the same HR@10). Here equal
scores go to the lower item index, whatever the CPU: `top_k` over every column, `best` over a subset of rows.
"""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Column indices of the k highest scores of each row, best first; equal scores: the lower column first
    (or, with `labels` of the same shape, the lower label).

    [n_rows, n_columns] -> [n_rows, min(k, n_columns)] (int64). Rows must not hold NaN."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"top_k needs a 2-d array of scores, got shape {scores.shape}")
    n_rows, n_cols = scores.shape
    k = min(int(k), n_cols)
    if k <= 0 or n_rows == 0:
        return np.zeros((n_rows, max(k, 0)), dtype=np.int64)
    if np.isnan(scores).any():
        raise ValueError("top_k got NaN scores: they have no rank")
    # the k-th highest value of each row is defined whatever the order of ties; every column scoring at least
    # that is a candidate (k of them, or more when ties straddle the cut)
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k]
    rows, cols = np.nonzero(scores >= kth[:, None])
    ties = cols if labels is None else np.asarray(labels)[rows, cols]
    order = np.lexsort((ties, -scores[rows, cols], rows))  # by row, then score descending, then column or label
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    return cols[starts[:, None] + np.arange(k)].astype(np.int64)


def best(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best (rows, scores) of candidate item `rows` and their `scores`, best first; equal scores: the
    lower row first (`top_k`'s rule, whatever order the candidates come in)."""
    rows = np.asarray(rows)
    if rows.shape != np.shape(scores) or rows.ndim != 1:
        raise ValueError(f"best needs one score per row, got rows {rows.shape} and scores {np.shape(scores)}")
    top = top_k(np.asarray(scores)[None, :], n, labels=rows[None, :])[0]
    return rows[top], scores[top]
