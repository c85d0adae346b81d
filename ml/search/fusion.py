"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): one ranking from several.

An item's fused score is the sum over the input rankings of weight / (K + rank), its rank counted from 1 in each
ranking that holds it (a ranking that does not hold it adds nothing). Only ranks are fused, never raw scores, so a
dense similarity and a BM25 score need no common scale. K = 60 is the paper's constant: it damps the head so that
an item near the top of two rankings beats one at the top of a single ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RRF_K = 60.0


def fuse(
    rankings: Sequence[np.ndarray], weights: Sequence[float], k: int, rrf_k: float = RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k rows (best first) and fused scores of one query's rankings (each an array of item rows, best
    first; -1 entries are padding and skipped). Equal fused scores go to the lower row, on every machine."""
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights; pass one weight per ranking")
    score: dict[int, float] = {}
    for rows, weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        for rank, row in enumerate(np.asarray(rows).tolist(), start=1):
            if row >= 0:
                score[row] = score.get(row, 0.0) + weight / (rrf_k + rank)
    if not score:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    rows_all = np.fromiter(score, dtype=np.int64, count=len(score))
    values = np.fromiter(score.values(), dtype=np.float64, count=len(score))
    order = np.lexsort((rows_all, -values))[:k]
    return rows_all[order], values[order]
