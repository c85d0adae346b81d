"""Search quality on judged queries (graded relevance, such as the Crowdflower file): per-query metrics, the
re-ranking protocol and paired intervals over queries.

A judged query comes with graded products (1 = irrelevant .. 4 = exactly what was asked). NDCG@k uses every grade
(gain 2^(g-1) - 1, `ml.data.crowdflower.gain`); recall and the reciprocal rank need a yes/no, and a product counts as
relevant from grade `RELEVANT_GRADE` (3) up: it answers the query, if not exactly. A product not judged for the
query gains nothing and is not relevant (the retrieval protocol's rule).

Re-ranking protocol: a query ranks its own judged products only. A scorer's order within them is its scores sorted
(equal scores: the lower row, as `ml.topk.top_k`); a fused order (`fused_within`) fuses the dense order and the
lexical order within them with the same reciprocal rank fusion as the served ranking (`ml.search.fusion.fuse`),
the lexical side keeping only the products BM25 scores above 0, as `ml.search.engine.LexicalIndex.top` does.

Intervals: the queries are resampled with replacement (`ml.evaluation.bootstrap.shopper_resamples`, with the query
as the unit), every method on the same resamples, so a difference between two methods is a paired one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml.data.crowdflower import gain
from ml.evaluation.bootstrap import DEFAULT_RESAMPLES, hold_out, ratio_draws, shopper_resamples, summary
from ml.evaluation.metrics import graded_ndcg
from ml.search.fusion import fuse
from ml.topk import top_k

RELEVANT_GRADE = 3


def query_metrics(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> dict[str, float]:
    """ndcg (graded NDCG@k), rr (1 / rank of the first relevant product within k, else 0) and recall (relevant
    products within k / relevant products judged) of one query's ranking. rr and recall are NaN when no judged
    product is relevant, ndcg when no judged product gains anything: such a query measures nothing."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top = list(dict.fromkeys(ranked))[:k]
    relevant = {p for p, g in grades.items() if g >= RELEVANT_GRADE}
    ndcg = graded_ndcg(top, {p: gain(g) for p, g in grades.items()}, k)
    if not relevant:
        return {"ndcg": ndcg, "rr": math.nan, "recall": math.nan}
    first = next((rank for rank, p in enumerate(top, start=1) if p in relevant), 0)
    hits = sum(p in relevant for p in top)
    return {"ndcg": ndcg, "rr": 1.0 / first if first else 0.0, "recall": hits / len(relevant)}


def order_within(scores: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """``rows`` (catalogue rows) ordered by ``scores`` (one per catalogue row), best first; equal scores: the
    lower row first."""
    ordered = np.sort(np.asarray(rows, dtype=np.int64))
    if ordered.size == 0:
        return ordered
    return ordered[top_k(np.asarray(scores)[ordered][None, :], ordered.size)[0]]


def fused_within(
    dense_scores: np.ndarray, lexical_scores: np.ndarray, rows: Sequence[int], lexical_weight: float, depth: int
) -> np.ndarray:
    """``rows`` in the order of the served fusion restricted to them: the dense order and the order of the rows
    BM25 scores above 0, each `depth` deep, fused by RRF with weights 1 and ``lexical_weight``. A row neither side
    holds within its depth comes after the fused ones, in dense order."""
    dense = order_within(dense_scores, rows)
    lexical = order_within(lexical_scores, rows)
    lexical = lexical[np.asarray(lexical_scores)[lexical] > 0]
    fused, _ = fuse([dense[:depth], lexical[:depth]], [1.0, lexical_weight], len(dense))
    rest = dense[~np.isin(dense, fused)]
    return np.concatenate([fused, rest]).astype(np.int64)


def paired_summary(
    values: Mapping[str, Sequence[float]],
    units: Sequence[str],
    seed: int,
    reference: str,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Per method, its mean with an interval, and the paired difference and ratio ``reference`` - method and
    ``reference`` / method, over resamples of the ``units`` (one per value; the query). NaN values (a query that
    measures nothing) are left out of every method alike."""
    names = list(values)
    matrix = np.vstack([np.asarray(values[n], dtype=np.float64) for n in names])
    keep = np.all(np.isfinite(matrix), axis=0)
    if not keep.any():
        raise ValueError("no unit has a finite value for every method: nothing to compare")
    matrix = matrix[:, keep]
    resamples = shopper_resamples(np.asarray(units)[keep], n_resamples, seed)
    itself = hold_out(resamples)
    draws = {n: resamples.means(row) for n, row in zip(names, matrix, strict=True)}
    points = {n: float(itself.means(row)[0]) for n, row in zip(names, matrix, strict=True)}
    out: dict[str, Any] = {
        "n_units": int(keep.sum()),
        "n_left_out": int((~keep).sum()),
        "reference": reference,
        "mean": {n: summary(points[n], draws[n]) for n in names},
        "difference": {},
        "ratio": {},
    }
    for n in names:
        if n == reference:
            continue
        out["difference"][n] = summary(points[reference] - points[n], draws[reference] - draws[n])
        ratio = points[reference] / points[n] if points[n] else None
        out["ratio"][n] = summary(ratio, ratio_draws(draws[reference], draws[n]))
    return out
