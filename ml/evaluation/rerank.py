"""Exposure-constrained re-ranking: a minimum share of long-tail items in every prefix of the top k.

Greedy and FA*IR-like: walking positions 1..k, the first p positions of each window of `window` positions
must hold at least floor(min_tail_share * p) tail items. When the tail count so far would fall short, the
best remaining tail item is placed; otherwise the best remaining item of any kind. With min_tail_share = 0 the output is the candidates sorted by score. When too few tail
candidates exist, the constraint is met as far as possible and the rest is filled by score.

The same function serves evaluation (`tradeoff`) and serving (re-rank the model's candidates).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from ml.evaluation.fairness import HEAD, TAIL, provider_exposure
from ml.evaluation.metrics import Target, ranking_metrics

log = logging.getLogger(__name__)

_EPS = 1e-9  # keeps floor(0.29 * 100) at 29 despite floating-point error


@dataclass(frozen=True)
class RerankConfig:
    """min_tail_share: minimum share of tail items in each prefix; window: positions per constraint window
    (the count restarts every `window` positions, like pages of results; window >= k means plain prefixes)."""

    min_tail_share: float = 0.0
    window: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tail_share <= 1.0:
            raise ValueError(f"min_tail_share must be in [0, 1], got {self.min_tail_share}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def required_tail(position: int, min_tail_share: float) -> int:
    """Tail items needed among the first `position` slots of a window: floor(share * position).

    Floor, as FA*IR's minimum counts grow: the first tail slot is due once the share adds up to a whole
    item, so a 10% share does not take over the top position.
    """
    return max(0, math.floor(min_tail_share * position + _EPS))


def rerank(
    items: Sequence[str],
    scores: Sequence[float],
    is_tail: Mapping[str, bool],
    k: int,
    config: RerankConfig,
) -> list[str]:
    """The top min(k, len(items)) items after exposure-constrained re-ranking (deterministic).

    Ties in score keep the input order. Items missing from `is_tail` are not tail.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(items) != len(scores):
        raise ValueError(f"items has {len(items)} entries but scores has {len(scores)}; pass one score per item")
    if len(set(items)) != len(items):
        raise ValueError("items contains duplicates; pass each candidate once")
    order = sorted(range(len(items)), key=lambda i: (-float(scores[i]), i))
    tail_order = [i for i in order if is_tail.get(items[i], False)]
    taken = [False] * len(items)
    best = 0  # pointer into order
    best_tail = 0  # pointer into tail_order
    out: list[str] = []
    tail_in_window = 0
    for position in range(1, min(k, len(items)) + 1):
        in_window = (position - 1) % config.window + 1
        if in_window == 1:
            tail_in_window = 0
        while best_tail < len(tail_order) and taken[tail_order[best_tail]]:
            best_tail += 1
        need_tail = tail_in_window < required_tail(in_window, config.min_tail_share)
        if need_tail and best_tail < len(tail_order):
            pick = tail_order[best_tail]
        else:
            while taken[order[best]]:
                best += 1
            pick = order[best]
        taken[pick] = True
        out.append(items[pick])
        tail_in_window += bool(is_tail.get(items[pick], False))
    return out


def tradeoff(
    candidates: Sequence[Sequence[str]],
    targets: Sequence[Target],
    is_tail: Mapping[str, bool],
    k: int,
    shares: Sequence[float],
    scores: Sequence[Sequence[float]] | None = None,
    window: int = 10,
) -> pd.DataFrame:
    """Quality against provider fairness at several minimum tail shares.

    `candidates[i]` is case i's candidate list (longer than k leaves room to re-rank), best first unless
    `scores` gives each candidate's score. One row per share: min_tail_share, ndcg, recall, ndcg_loss
    (against no constraint), tail_exposure_share, tail_relevance_share, provider_exposure_ratio.
    """
    if len(candidates) != len(targets):
        raise ValueError(f"candidates has {len(candidates)} cases but targets has {len(targets)}")
    if scores is None:
        scores = [[-float(r) for r in range(len(c))] for c in candidates]
    elif len(scores) != len(candidates):
        raise ValueError(f"scores has {len(scores)} cases but candidates has {len(candidates)}")
    item_tier = {item: TAIL if flag else HEAD for item, flag in is_tail.items()}
    rows = []
    baseline_ndcg: float | None = None
    for share in [0.0, *shares]:
        config = RerankConfig(min_tail_share=float(share), window=window)
        lists = [rerank(c, s, is_tail, k, config) for c, s in zip(candidates, scores, strict=True)]
        quality = ranking_metrics(lists, targets, k)
        exposure = provider_exposure(lists, targets, item_tier, k)
        ndcg = quality[f"ndcg_at_{k}"]
        if baseline_ndcg is None:
            baseline_ndcg = ndcg
            continue
        rows.append(
            {
                "min_tail_share": float(share),
                "ndcg": ndcg,
                "recall": quality[f"recall_at_{k}"],
                "ndcg_loss": baseline_ndcg - ndcg,
                "tail_exposure_share": exposure["tail_exposure_share"],
                "tail_relevance_share": exposure["tail_relevance_share"],
                "provider_exposure_ratio": exposure["ratio"],
            }
        )
        log.info("rerank tradeoff: share %.2f ndcg %.4f ratio %s", share, ndcg, exposure["ratio"])
    return pd.DataFrame(rows)
