"""The item-transition counts as released: each shopper's (previous, next) pairs bounded, then, with DP, Gaussian
partition selection over the pairs that occur (ml.privacy.accounting has the threshold and its accounting).

Only pairs some shopper holds are counted (int64 keys a * n_items + b), so time and memory follow the shoppers'
pairs, not n_items ** 2: nothing here is dense in the catalogue (benchmarks/results/sparse-release.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ml.privacy.noise import NoiseSource

log = logging.getLogger(__name__)


def _user_pairs(seq: Sequence[int], n_items: int, which: int) -> list[tuple[int, int]]:
    """Distinct consecutive (prev, next) pairs of one shopper, in order of first appearance."""
    items = [int(i) for i in seq]
    for i in items:
        if not 0 <= i < n_items:
            raise ValueError(f"sequence {which} holds item index {i}, outside 0..{n_items - 1}")
    return list(dict.fromkeys(zip(items[:-1], items[1:], strict=True)))


def capped_pairs(
    sequences: Sequence[Sequence[int]], n_items: int, per_user: int, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """What each shopper adds to the transition counts: its distinct consecutive (prev, next) pairs, a random
    `per_user` of them (drawn with `rng`) when it has more. Each sequence is one shopper's items in time order."""
    if n_items < 1 or per_user < 1:
        raise ValueError(f"need n_items >= 1 and per_user >= 1, got {n_items} and {per_user}")
    out = []
    capped = 0
    for which, seq in enumerate(sequences):
        pairs = _user_pairs(seq, n_items, which)
        if len(pairs) > per_user:
            capped += 1
            keep = np.sort(rng.choice(len(pairs), size=per_user, replace=False))
            pairs = [pairs[k] for k in keep]
        out.append(pairs)
    if capped:
        log.info("transition counts: %d shopper(s) capped at %d distinct pairs", capped, per_user)
    return out


@dataclass(frozen=True)
class ReleasedCounts:
    """The released pairs, sorted by key a * n_items + b, and their counts: exact without DP, noised with it
    (each above `threshold`)."""

    n_items: int
    keys: np.ndarray  # int64, sorted, distinct
    counts: np.ndarray  # float64, one per key
    threshold: float | None

    @property
    def rows(self) -> np.ndarray:
        return self.keys // self.n_items

    @property
    def cols(self) -> np.ndarray:
        return self.keys % self.n_items

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The position of each key among the released ones, -1 for a key not released."""
        keys = np.asarray(keys, dtype=np.int64)
        at = np.searchsorted(self.keys, keys)
        inside = at < len(self.keys)
        found = np.zeros(len(keys), dtype=bool)
        found[inside] = self.keys[at[inside]] == keys[inside]
        return np.where(found, at, -1)


def pair_keys(pairs: Sequence[Sequence[tuple[int, int]]], n_items: int) -> np.ndarray:
    """The int64 keys a * n_items + b of every shopper's pairs, shopper after shopper."""
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(pairs)), dtype=np.int64).reshape(-1, 2)
    if len(flat) and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"a pair holds an item index outside 0..{n_items - 1}")
    return flat[:, 0] * np.int64(n_items) + flat[:, 1]


def release_counts(
    pairs: Sequence[Sequence[tuple[int, int]]],
    n_items: int,
    per_user: int,
    sigma: float | None,
    noise: NoiseSource,
    threshold: float | None = None,
) -> ReleasedCounts:
    """The counts of the shoppers' pairs (`capped_pairs`: at most `per_user` distinct ones each, 1 each) over the
    pairs that occur; with `sigma`, Gaussian noise of std sigma * sqrt(per_user) on each of those counts and only
    the pairs whose noised count exceeds `threshold` kept (Gaussian partition selection: `threshold` is the plan's
    `transitions_threshold`, ml.privacy.accounting.selection_threshold). Without `sigma`, the exact counts of
    every pair that occurs.

    `noise` is where the Gaussians come from: `ml.privacy.noise.SecureRandom` in production, a seeded numpy
    generator where the counts must be reproducible; one value is drawn per
    distinct pair, in key order."""
    if n_items < 1 or per_user < 1:
        raise ValueError(f"need n_items >= 1 and per_user >= 1, got {n_items} and {per_user}")
    if sigma is not None and sigma <= 0:
        raise ValueError(f"sigma must be positive (or None for no noise), got {sigma}")
    if sigma is not None and threshold is None:
        raise ValueError("noised counts need their release threshold (the plan's transitions_threshold)")
    if sigma is None and threshold is not None:
        raise ValueError("a release threshold applies to noised counts only (sigma is None)")
    sizes = np.fromiter(map(len, pairs), dtype=np.int64, count=len(pairs))
    if len(sizes) and sizes.max() > per_user:
        which = int(np.argmax(sizes > per_user))
        raise ValueError(f"shopper {which} adds {sizes[which]} pairs, more than per_user={per_user}")
    every = pair_keys(pairs, n_items)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((every, owner))
    twice = (np.diff(owner[order]) == 0) & (np.diff(every[order]) == 0)
    if twice.any():
        which = int(owner[order][1:][twice][0])
        raise ValueError(f"shopper {which} adds a pair twice: each shopper counts at most 1 in a pair")
    keys, counts = np.unique(every, return_counts=True)
    values = counts.astype(np.float64)
    if sigma is not None and threshold is not None:
        values += noise.standard_normal(len(keys), dtype=np.float64) * (sigma * math.sqrt(per_user))
        keep = values > threshold
        keys, values = keys[keep], values[keep]
    return ReleasedCounts(n_items=n_items, keys=keys, counts=values, threshold=threshold)
