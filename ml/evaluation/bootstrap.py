"""Paired bootstrap over shoppers: how much a hold-out figure would move on another draw of shoppers.

A hold-out case belongs to a shopper, and one shopper's cases are not independent of each other (the same
tastes, the same history). So a resample draws *shoppers* with replacement, as many as there are, and keeps
every case of a drawn shopper, once per time it was drawn. Every ranker is scored on the same resamples, so a
comparison (candidate - baseline, candidate / baseline, one group / another) is taken resample by resample: a
paired difference, whose spread is the spread of the comparison itself, not of its two sides added up.

Resamples are fixed by a seed and the cases' shopper ids, so the evaluate and gate stages (and a reviewer
re-running them) draw the very same resamples. The interval of a statistic is the percentile interval of its
resampled values; the point estimate is the statistic on the hold-out itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Resamples:
    """``counts[b, s]``: how many times resample b drew shopper s; ``shopper[i]``: the shopper of case i."""

    counts: np.ndarray
    shopper: np.ndarray
    seed: int

    @property
    def n_resamples(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_shoppers(self) -> int:
        return int(self.counts.shape[1])

    def means(
        self, values: Sequence[float] | np.ndarray, mask: Sequence[bool] | np.ndarray | None = None
    ) -> np.ndarray:
        """The mean of ``values`` (one per case) in each resample, over the cases where ``mask`` holds.

        A resample that drew none of the masked cases has no mean: NaN there."""
        x = np.asarray(values, dtype=np.float64)
        if x.shape != self.shopper.shape:
            raise ValueError(
                f"values has {x.size} entries but the resamples were drawn for {self.shopper.size} cases; "
                "pass one value per hold-out case, in the cases' order"
            )
        keep = np.ones(x.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        sums = np.bincount(self.shopper[keep], weights=x[keep], minlength=self.n_shoppers)
        sizes = np.bincount(self.shopper[keep], minlength=self.n_shoppers).astype(np.float64)
        total, n = self.counts @ sums, self.counts @ sizes
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.where(n > 0, n, 1.0), np.nan)


def shopper_resamples(
    shoppers: Sequence[Any] | np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> Resamples:
    """``n_resamples`` draws of the cases' shoppers with replacement (as many as there are), seeded.

    Shoppers are numbered in sorted order of their ids, so the draws depend on the set of shoppers and the seed,
    not on the order of the cases."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    ids = np.asarray([str(s) for s in shoppers])
    if ids.size == 0:
        raise ValueError("no cases to resample: the hold-out is empty")
    unique, shopper = np.unique(ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    n = unique.size
    counts = np.empty((n_resamples, n), dtype=np.float64)
    for b in range(n_resamples):
        counts[b] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return Resamples(counts=counts, shopper=shopper.astype(np.int64), seed=seed)


def interval(draws: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The two-sided percentile interval of resampled values at ``confidence`` (NaN draws are left out).

    Deciding on its lower bound is a one-sided test at (1 + confidence) / 2: 97.5% at the default 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    x = np.asarray(draws, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(x, [tail, 1.0 - tail])
    return float(lower), float(upper)


def ratio_draws(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator per resample; NaN where the denominator is 0 (the ratio is undefined there)."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def group_ratio_draws(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    eligible: Sequence[str],
    resamples: Resamples,
) -> np.ndarray:
    """The min group / max group mean of ``values`` in each resample, over the ``eligible`` groups.

    Which groups are eligible is decided once on the hold-out (``fairness.user_group_fairness``: known groups with
    enough cases), so every resample compares the same groups. NaN where a group is absent or the best is 0."""
    labels = np.asarray([str(g) for g in groups])
    if len(eligible) < 2:
        return np.full(resamples.n_resamples, np.nan)
    per_group = np.vstack([resamples.means(values, labels == g) for g in eligible])
    with np.errstate(invalid="ignore"):
        return ratio_draws(per_group.min(axis=0), per_group.max(axis=0))


def summary(point: float | None, draws: np.ndarray | None, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """``{"value", "lower", "upper", "confidence"}``: a point estimate with its interval, ready for JSON."""
    if point is None or draws is None:
        return {"value": point, "lower": None, "upper": None, "confidence": confidence}
    lower, upper = interval(draws, confidence)
    return {
        "value": float(point),
        "lower": None if math.isnan(lower) else lower,
        "upper": None if math.isnan(upper) else upper,
        "confidence": confidence,
    }


def summaries(
    points: Mapping[str, float | None], draws: Mapping[str, np.ndarray], confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, dict[str, Any]]:
    """``summary`` of every named statistic that has a point estimate."""
    return {name: summary(value, draws.get(name), confidence) for name, value in points.items()}


def hold_out(resamples: Resamples) -> Resamples:
    """The hold-out itself as a single "resample" (every shopper once): the point estimate of any statistic
    computed by the same code as its resampled values."""
    return Resamples(counts=np.ones((1, resamples.n_shoppers)), shopper=resamples.shopper, seed=resamples.seed)
