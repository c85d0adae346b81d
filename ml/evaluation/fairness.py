"""User-side and provider-side fairness of top-k recommendations.

User side: per-case quality (from `metrics.per_case_metrics`) broken down by audit attributes (gender, age
band, activity level...) with fairlearn's MetricFrame; the house gate reads the min/max ratio per attribute.
Audit attributes are only ever used here, never as model inputs.

Provider side: brands are split into a popular head and a long tail by their share of interactions; the
tail's position-discounted exposure share in the top-k lists is compared with its share of relevant items.
A ratio below 1 means the recommender shows long-tail brands less than shoppers actually choose them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from ml.evaluation.metrics import Target, check_cases, relevant_set

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
HEAD = "head"
TAIL = "tail"
DEFAULT_MIN_GROUP_SIZE = 20


# ------------------------------------------------------------------------------------------------ user side


def activity_groups(history_lengths: Sequence[int]) -> list[str]:
    """ "light" for histories no longer than the median, "heavy" above it (ties go to light)."""
    if len(history_lengths) == 0:
        return []
    lengths = np.asarray(history_lengths, dtype=float)
    median = float(np.median(lengths))
    return ["heavy" if n > median else "light" for n in lengths]


def _group_labels(column: pd.Series) -> pd.Series:
    """Group names as strings; missing values (None, NaN, empty) become "unknown"."""
    labels = column.astype(object).where(column.notna(), UNKNOWN).astype(str)
    return labels.where(labels.str.strip() != "", UNKNOWN).reset_index(drop=True)


def _mean_of(values: np.ndarray):
    def metric(y_true: Any, y_pred: Any) -> float:
        return float(np.mean(values[np.asarray(y_true, dtype=np.int64)]))

    return metric


def _count(y_true: Any, y_pred: Any) -> int:
    return int(len(y_true))


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def user_group_fairness(
    per_case: pd.DataFrame,
    groups: pd.DataFrame,
    metrics: Sequence[str] = ("ndcg", "recall"),
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> dict[str, dict[str, Any]]:
    """Per-group means of per-case metrics, and min/max ratio and max-min gap between groups.

    `groups` has one column per audit attribute, rows in the same order as `per_case`. Missing values form
    the group "unknown"; it and every group with fewer than `min_group_size` cases are reported in
    "by_group" but left out of "ratio" and "gap" (listed under "excluded"). With fewer than two eligible
    groups, ratio and gap are None. A ratio is None when the best group's value is 0 (undefined).
    """
    missing = [m for m in metrics if m not in per_case.columns]
    if missing:
        raise ValueError(
            f"per_case has no column(s) {missing}; it has {list(per_case.columns)} "
            "(build it with ml.evaluation.metrics.per_case_metrics)"
        )
    if len(groups) != len(per_case):
        raise ValueError(
            f"groups has {len(groups)} rows but per_case has {len(per_case)}; "
            "pass one row of audit attributes per evaluated case, in the same order"
        )
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be at least 1, got {min_group_size}")

    values = {m: per_case[m].to_numpy(dtype=float) for m in metrics}
    rows = np.arange(len(per_case))
    result: dict[str, dict[str, Any]] = {}
    for attribute in groups.columns:
        labels = _group_labels(groups[attribute])
        frame = MetricFrame(
            metrics={**{m: _mean_of(values[m]) for m in metrics}, "n": _count},
            y_true=rows,
            y_pred=rows,
            sensitive_features=labels.rename(attribute),
        )
        by_group_df = frame.by_group
        by_group: dict[str, dict[str, float]] = {}
        for group, row in by_group_df.iterrows():
            entry: dict[str, float] = {m: float(row[m]) for m in metrics}
            entry["n"] = int(row["n"])
            by_group[str(group)] = entry
        excluded = sorted(g for g, e in by_group.items() if g == UNKNOWN or e["n"] < min_group_size)
        eligible = [g for g in by_group if g not in excluded]
        ratio: dict[str, float | None] = {m: None for m in metrics}
        gap: dict[str, float | None] = {m: None for m in metrics}
        if len(eligible) >= 2:
            mask = labels.isin(eligible).to_numpy()
            kept = MetricFrame(
                metrics={m: _mean_of(values[m]) for m in metrics},
                y_true=rows[mask],
                y_pred=rows[mask],
                sensitive_features=labels[mask].rename(attribute),
            )
            ratios = kept.ratio(method="between_groups")
            gaps = kept.difference(method="between_groups")
            for m in metrics:
                ratio[m] = _finite_or_none(ratios[m]) if kept.group_max()[m] > 0 else None
                gap[m] = _finite_or_none(gaps[m])
        else:
            log.warning(
                "fairness: attribute %r has %d group(s) with at least %d cases (%s); no ratio computed",
                attribute,
                len(eligible),
                min_group_size,
                eligible,
            )
        overall = frame.overall
        result[str(attribute)] = {
            "overall": {m: float(overall[m]) for m in metrics},
            "by_group": by_group,
            "ratio": ratio,
            "gap": gap,
            "excluded": excluded,
            "min_group_size": min_group_size,
        }
    return result


# -------------------------------------------------------------------------------------------- provider side


def brand_tiers(
    item_brand: Mapping[str, str], item_popularity: Mapping[str, float], head_share: float = 0.5
) -> dict[str, str]:
    """Brand -> "head" or "tail".

    The head is the smallest set of most-popular brands whose interactions together reach `head_share` of
    all interactions (brands ordered by interactions, then by name); every other brand is tail.
    """
    if not 0 < head_share <= 1:
        raise ValueError(f"head_share must be in (0, 1], got {head_share}")
    totals: dict[str, float] = {}
    for item, brand in item_brand.items():
        totals[brand] = totals.get(brand, 0.0) + float(item_popularity.get(item, 0.0))
    grand_total = sum(totals.values())
    if grand_total <= 0:
        raise ValueError(
            "no interactions for any branded item: item_popularity is empty or does not share ids with "
            "item_brand; pass interaction counts keyed by the same item ids"
        )
    ordered = sorted(totals, key=lambda b: (-totals[b], b))
    tiers: dict[str, str] = {}
    cumulative = 0.0
    for brand in ordered:
        if cumulative < head_share * grand_total - 1e-12:
            tiers[brand] = HEAD
            cumulative += totals[brand]
        else:
            tiers[brand] = TAIL
    return tiers


def item_tiers(item_brand: Mapping[str, str], tiers: Mapping[str, str]) -> dict[str, str]:
    """Item -> tier of its brand (for `provider_exposure`)."""
    return {item: tiers.get(brand, TAIL) for item, brand in item_brand.items()}


def provider_exposure(
    recommendations: Sequence[Sequence[str]],
    targets: Sequence[Target],
    item_tier: Mapping[str, str],
    k: int,
) -> dict[str, Any]:
    """Tail brands' share of position-discounted exposure in the top k against their share of relevant items.

    Exposure of rank r is 1 / log2(r + 1). Returns tail_exposure_share, tail_relevance_share and
    ratio = exposure share / relevance share (None when no relevant item is tail). Items missing from
    `item_tier` count as not tail (their number is in "n_untiered").
    """
    check_cases(recommendations, targets, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    exposure_total = exposure_tail = 0.0
    relevant_total = relevant_tail = 0
    untiered: set[str] = set()
    for ranked, target in zip(recommendations, targets, strict=True):
        for rank, item in enumerate(list(ranked)[:k]):
            tier = item_tier.get(item)
            if tier is None:
                untiered.add(item)
            exposure_total += discounts[rank]
            if tier == TAIL:
                exposure_tail += discounts[rank]
        for item in relevant_set(target):
            tier = item_tier.get(item)
            if tier is None:
                untiered.add(item)
            relevant_total += 1
            relevant_tail += tier == TAIL
    if untiered:
        log.warning("provider exposure: %d item(s) have no tier and count as head", len(untiered))
    exposure_share = exposure_tail / exposure_total if exposure_total else 0.0
    relevance_share = relevant_tail / relevant_total if relevant_total else 0.0
    return {
        "tail_exposure_share": exposure_share,
        "tail_relevance_share": relevance_share,
        "ratio": exposure_share / relevance_share if relevance_share > 0 else None,
        "k": k,
        "n_cases": len(recommendations),
        "n_untiered": len(untiered),
    }


def catalogue_tail(item_brand: Mapping[str, str], head_share: float = 0.5) -> dict[str, bool]:
    """Item -> whether its brand is long-tail by the catalogue alone (items per brand, public data).

    What the fair re-ranker protects, at evaluation and at serving alike: no shopper statistic is needed
    to know it, so it ships with the model at no privacy cost. (The provider-exposure metric itself tiers
    brands by interactions, `brand_tiers`, as an audit.)
    """
    tiers = brand_tiers(item_brand, dict.fromkeys(item_brand, 1.0), head_share=head_share)
    return {item: tiers.get(brand) == TAIL for item, brand in item_brand.items()}
