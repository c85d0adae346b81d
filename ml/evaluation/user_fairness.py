"""User-side fairness mitigation: re-rank the worse-served activity group's candidates with a support score.

In the spirit of user-oriented fair re-ranking (Li et al., "User-oriented Fairness in Recommendation", WWW
2021), but raising the worse-served group instead of levelling the better-served one down: for each shopper of
the mitigated group (light or heavy, by history length, the split `fairness.activity_groups` audits), the
model's score of each candidate is blended with a support score, a second signal that ranks that group's next
items better; every other shopper's ranking is left exactly as the model made it.

    blended = (1 - strength) * z(model score) + strength * z(support score)

z standardizes a score over the shopper's own candidate pool (mean 0, deviation 1; a constant score becomes 0,
so it does not reorder anything), which puts the two signals on one scale whatever their units. strength 0 is
the model's ranking; 1 is the support score alone.

Inputs allowed: the shopper's history length and history (read at serving time, which is not training and
needs no epsilon) and scores computed from the model and that history. Audit attributes (gender, age band) are
never read here. The support score chosen on amazon2018's development split is `unseen`: whether a candidate
is new to the shopper. There the heavy shoppers are the worse-served group; their next item repeats a history
item less often than a light shopper's, and their longer histories put more already-bought items among the
candidates, while the model learned one repeat penalty for everyone; the other signals measured (the text
score alone, the DP transition counts, the model's score of the newest items only, DP popularity) served them
no better than the model (benchmarks/results/user-fairness.md). A shop sets `group` from its own
development split (`worse_served`), never from its test hold-out: on the synthetic shop the worse-served group
changes with the seed, and mitigating the better-served group there only levelled it down.

The same functions serve evaluation (`tradeoff`) and serving (`mitigate` on the model's candidates).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.evaluation.fairness import activity_groups, provider_exposure
from ml.evaluation.metrics import Target, per_case_metrics
from ml.evaluation.rerank import RerankConfig, rerank

log = logging.getLogger(__name__)

GROUPS = ("light", "heavy")
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class UserFairnessConfig:
    """strength: weight of the support score for the mitigated group's shoppers, in [0, 1] (0 = off);
    group: the activity group mitigated, "heavy" or "light";
    threshold: histories no longer than this are light, longer ones heavy; None = the median history length of
    the cases ranked together, the rule `fairness.activity_groups` audits with (evaluation); serving passes
    the training window's median, as a single request has no batch to take a median of."""

    # the defaults are the development split's choice (amazon2018, the highest user NDCG ratio among the
    # strengths that lose no overall NDCG@10: benchmarks/results/user-fairness.md), never the test split's; a
    # re-run that picks a neighbouring strength whose ratio is inside the default's interval does not move it
    strength: float = 0.3
    group: str = "heavy"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if self.group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {self.group!r}")
        if self.threshold is not None and self.threshold < 0:
            raise ValueError(f"threshold must be a history length (>= 0) or None, got {self.threshold}")

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def mitigated(history_lengths: Sequence[int], config: UserFairnessConfig) -> np.ndarray:
    """Which shoppers the mitigation applies to: those of `config.group` (bool per shopper).

    With no threshold, the groups are `activity_groups`' (median of these lengths, ties light)."""
    lengths = np.asarray(history_lengths, dtype=float)
    if config.threshold is None:
        labels = np.asarray(activity_groups(lengths.tolist()), dtype=object)
    else:
        labels = np.where(lengths > config.threshold, "heavy", "light").astype(object)
    return labels == config.group


def standardize(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """(scores - mean) / deviation over one pool; all zeros when the pool's scores are all equal."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return x
    deviation = float(x.std())
    if not np.isfinite(deviation) or deviation == 0.0:
        return np.zeros_like(x)
    return (x - x.mean()) / deviation


def blend(model_scores: Sequence[float], support_scores: Sequence[float], strength: float) -> np.ndarray:
    """(1 - strength) * z(model) + strength * z(support): one pool's blended scores."""
    if len(model_scores) != len(support_scores):
        raise ValueError(
            f"model_scores has {len(model_scores)} entries but support_scores has {len(support_scores)}; "
            "pass one support score per candidate, in the pool's order"
        )
    return (1.0 - strength) * standardize(model_scores) + strength * standardize(support_scores)


def _ranked(items: Sequence[str], scores: np.ndarray, k: int) -> list[str]:
    """The top k items by score; equal scores keep the pool's order (stable sort)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [items[i] for i in order]


def mitigated_scores(
    pools: Sequence[Sequence[str]],
    pool_scores: Sequence[Sequence[float]],
    support_scores: Sequence[Sequence[float]],
    history_lengths: Sequence[int],
    config: UserFairnessConfig,
) -> list[np.ndarray]:
    """Each shopper's candidate scores: blended for the mitigated group, the model's own for everyone else.

    `pools[i]` is shopper i's candidates, `pool_scores[i]` and `support_scores[i]` their model and support
    scores in the same order, `history_lengths[i]` the shopper's history length. The two kinds of score are on
    different scales, which does not matter: each only orders its own shopper's pool (for `mitigate`, or for
    the provider re-ranker, `ml.evaluation.rerank.rerank`, run after it).
    """
    n = len(pools)
    for name, seq in (
        ("pool_scores", pool_scores),
        ("support_scores", support_scores),
        ("history_lengths", history_lengths),
    ):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries but pools has {n}; pass one per shopper, in order")
    chosen = mitigated(history_lengths, config)
    out: list[np.ndarray] = []
    for i, (items, model, support) in enumerate(zip(pools, pool_scores, support_scores, strict=True)):
        if len(items) != len(model):
            raise ValueError(f"shopper {i}: {len(items)} candidates but {len(model)} model scores")
        if chosen[i] and config.strength > 0:
            out.append(blend(model, support, config.strength))
        else:
            out.append(np.asarray(model, dtype=np.float64))
    return out


def mitigate(
    pools: Sequence[Sequence[str]],
    pool_scores: Sequence[Sequence[float]],
    support_scores: Sequence[Sequence[float]],
    history_lengths: Sequence[int],
    config: UserFairnessConfig,
    k: int,
) -> list[list[str]]:
    """Each shopper's top k by `mitigated_scores`. Equal scores keep the pool's order, so with strength 0 (or
    for shoppers outside the group) the output is the model's ranking of the pool."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = mitigated_scores(pools, pool_scores, support_scores, history_lengths, config)
    return [_ranked(items, s, k) for items, s in zip(pools, scores, strict=True)]


def unseen(pools: Sequence[Sequence[str]], histories: Sequence[Sequence[str]]) -> list[list[float]]:
    """Support score: 1.0 for a candidate not in the shopper's history, 0.0 for one already there."""
    if len(pools) != len(histories):
        raise ValueError(f"histories has {len(histories)} entries but pools has {len(pools)}; pass one per shopper")
    out = []
    for items, history in zip(pools, histories, strict=True):
        seen = set(history)
        out.append([0.0 if item in seen else 1.0 for item in items])
    return out


def group_ndcg(per_case_ndcg: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean NDCG per activity group present."""
    return {g: float(per_case_ndcg[labels == g].mean()) for g in GROUPS if (labels == g).any()}


def _ratio(per_case_ndcg: np.ndarray, labels: np.ndarray) -> float | None:
    means = [per_case_ndcg[labels == g].mean() for g in GROUPS if (labels == g).any()]
    if len(means) < 2 or max(means) <= 0:
        return None
    return float(min(means) / max(means))


def bootstrap_ratios(per_case_ndcg: np.ndarray, labels: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """The min/max group NDCG ratio on each resample of shoppers (`resamples`: [n_resamples, n] row indices);
    NaN where a resample lacks a group or its best group scores 0.

    Passing the same resamples for every setting pairs the intervals: each setting is read on the same
    shoppers, and the difference of two settings' ratios resample by resample is the paired difference."""
    idx = np.asarray(resamples)
    values = per_case_ndcg[idx]
    heavy = labels[idx] == "heavy"
    n_heavy = heavy.sum(axis=1)
    n_light = idx.shape[1] - n_heavy
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_heavy = np.where(heavy, values, 0.0).sum(axis=1) / n_heavy
        mean_light = np.where(~heavy, values, 0.0).sum(axis=1) / n_light
        ratios = np.minimum(mean_heavy, mean_light) / np.maximum(mean_heavy, mean_light)
    return np.where(np.isfinite(ratios), ratios, np.nan)


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    """2.5th and 97.5th percentiles of the finite values (None, None when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def shopper_resamples(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """[n_resamples, n] indices of shoppers drawn with replacement (one case per shopper)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def tradeoff(
    pools: Sequence[Sequence[str]],
    pool_scores: Sequence[Sequence[float]],
    support_scores: Sequence[Sequence[float]],
    history_lengths: Sequence[int],
    targets: Sequence[Target],
    k: int,
    strengths: Sequence[float],
    item_tier: Mapping[str, str],
    group: str = "heavy",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    provider: tuple[Mapping[str, bool], RerankConfig] | None = None,
) -> pd.DataFrame:
    """Quality and user-side fairness at each strength (0, the model's ranking, comes first).

    One row per strength: strength, ndcg, ndcg_light, ndcg_heavy, ratio (min/max group NDCG; the groups are
    `activity_groups` of the history lengths), ratio_low and ratio_high (2.5th and 97.5th percentiles over
    `n_resamples` resamples of shoppers), gain_low and gain_high (the same percentiles of the ratio's paired
    gain over strength 0: every strength is read on the same resamples; an interval above 0 is a raise the
    resampling does not explain), ndcg_loss (against strength 0) and provider_exposure_ratio
    (`fairness.provider_exposure`). With n_resamples 0 the intervals are None. `provider` = (is_tail, config)
    runs the provider re-ranker (`ml.evaluation.rerank.rerank`) on the mitigated scores, as the evaluation
    stage ranks the candidate.
    """
    if len(targets) != len(pools):
        raise ValueError(f"targets has {len(targets)} entries but pools has {len(pools)}; pass one per shopper")
    labels = np.asarray(activity_groups(list(history_lengths)), dtype=object)
    resamples = shopper_resamples(len(pools), n_resamples, seed) if n_resamples > 0 else None
    rows = []
    baseline: float | None = None
    base_ratios: np.ndarray | None = None
    for strength in dict.fromkeys([0.0, *map(float, strengths)]):
        config = UserFairnessConfig(strength=strength, group=group)
        if provider is None:
            lists = mitigate(pools, pool_scores, support_scores, history_lengths, config, k)
        else:
            is_tail, rerank_config = provider
            scores = mitigated_scores(pools, pool_scores, support_scores, history_lengths, config)
            lists = [rerank(c, s.tolist(), is_tail, k, rerank_config) for c, s in zip(pools, scores, strict=True)]
        ndcg = per_case_metrics(lists, targets, k)["ndcg"].to_numpy()
        overall = float(ndcg.mean())
        baseline = overall if baseline is None else baseline
        by_group = group_ndcg(ndcg, labels)
        row = {
            "strength": strength,
            "ndcg": overall,
            **{f"ndcg_{g}": by_group.get(g) for g in GROUPS},
            "ratio": _ratio(ndcg, labels),
            "ratio_low": None,
            "ratio_high": None,
            "gain_low": None,
            "gain_high": None,
            "ndcg_loss": baseline - overall,
            "provider_exposure_ratio": provider_exposure(lists, targets, item_tier, k)["ratio"],
        }
        if resamples is not None:
            ratios = bootstrap_ratios(ndcg, labels, resamples)
            base_ratios = ratios if base_ratios is None else base_ratios
            row["ratio_low"], row["ratio_high"] = _interval(ratios)
            row["gain_low"], row["gain_high"] = _interval(ratios - base_ratios)
        rows.append(row)
        log.info("user fairness tradeoff: strength %.2f ndcg %.4f ratio %s", strength, overall, row["ratio"])
    return pd.DataFrame(rows)


def worse_served(per_case_ndcg: Sequence[float], history_lengths: Sequence[int]) -> str:
    """The activity group with the lower mean NDCG (read on a development split to set `config.group`)."""
    labels = np.asarray(activity_groups(list(history_lengths)), dtype=object)
    means = group_ndcg(np.asarray(per_case_ndcg, dtype=float), labels)
    if len(means) < 2:
        raise ValueError(f"need shoppers in both activity groups to compare them, got only {list(means)}")
    return min(means, key=lambda g: means[g])


def choose_strength(table: pd.DataFrame, max_ndcg_loss: float = 0.0) -> float:
    """The strength with the highest user NDCG ratio among those losing at most `max_ndcg_loss` overall NDCG
    (relative to strength 0); the smallest such strength on ties. Read on a development split, never the test
    hold-out."""
    if table.empty:
        raise ValueError("the trade-off table is empty; run tradeoff with at least one strength")
    base = float(table.loc[table["strength"] == 0.0, "ndcg"].iloc[0])
    allowed = table[table["ndcg"] >= base * (1.0 - max_ndcg_loss) - 1e-12]
    allowed = allowed[allowed["ratio"].notna()]
    if allowed.empty:
        return 0.0
    best = allowed["ratio"].max()
    return float(allowed.loc[allowed["ratio"] >= best - 1e-12, "strength"].min())


USER_SIDE_STRENGTHS = (0.1, 0.3, 0.5)


def worse_group_tradeoff(
    pool: list[list[str]],
    pool_scores: Any,
    histories: list[list[str]],
    cases: pd.DataFrame,
    per_case: pd.DataFrame,
    k: int,
    tiers: dict[str, str],
    provider: tuple[Any, Any],
    seed: int,
) -> dict[str, Any]:
    """What the user-side mitigation (ml.evaluation.user_fairness) would do for the worse-served activity group
    on this hold-out, after the provider re-ranker as served: a diagnostic for the reviewer, not applied to the
    candidate (a shop chooses the group and strength on a development split, never on its test hold-out)."""
    from ml.evaluation.compare import NDCG_PREFIX

    lengths = [len(h) for h in histories]
    try:
        group = worse_served(per_case[f"{NDCG_PREFIX}candidate"].to_numpy(), lengths)
    except ValueError as err:  # every shopper in one activity group: nothing to compare
        return {"group": None, "reason": str(err), "tradeoff": []}
    table = tradeoff(
        pool,
        [s.tolist() for s in pool_scores],
        unseen(pool, histories),
        lengths,
        cases["item_id"].tolist(),
        k,
        USER_SIDE_STRENGTHS,
        tiers,
        group=group,
        seed=seed,
        provider=provider,
    )
    return {
        "group": group,
        "support": "unseen",
        "applied": False,
        "tradeoff": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
    }
