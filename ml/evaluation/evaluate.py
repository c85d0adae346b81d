"""One evaluation of one ranker on the hold-out: accuracy, beyond-accuracy, user and provider fairness.

Every ranker (candidate, champion, baselines) goes through `evaluate_rankings`, so all numbers a
reviewer compares are computed by the same code on the same cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml.data.schema import USER_ATTRIBUTES
from ml.evaluation.bootstrap import Resamples, group_ratio_draws, hold_out, ratio_draws
from ml.evaluation.fairness import _group_labels, activity_groups, provider_exposure, user_group_fairness
from ml.evaluation.metrics import beyond_accuracy, per_case_metrics, summarize
from ml.gate.uncertainty import ALTERNATIVE_PREFIX


def audit_groups(cases: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """One column per audit attribute present (same row order as cases), plus activity (light/heavy)."""
    attrs = [a for a in USER_ATTRIBUTES if a in users.columns and users[a].notna().any()]
    groups = cases[["user_id"]].merge(users[["user_id", *attrs]], on="user_id", how="left")[attrs]
    groups = groups.reset_index(drop=True)
    groups["activity"] = activity_groups(cases["history"].map(len).tolist())
    return groups


def evaluate_rankings(
    recommendations: Sequence[Sequence[str]],
    cases: pd.DataFrame,
    k: int,
    *,
    n_catalog: int,
    item_popularity: Mapping[str, float],
    item_tier: Mapping[str, str],
    groups: pd.DataFrame | None = None,
    item_vectors: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    targets = cases["item_id"].tolist()
    per_case = per_case_metrics(recommendations, targets, k)
    out: dict[str, Any] = {"metrics": summarize(per_case, k)}
    out["beyond"] = beyond_accuracy(recommendations, k, n_catalog, item_popularity, item_vectors)
    out["provider"] = provider_exposure(recommendations, targets, item_tier, k)
    if groups is not None:
        out["user_fairness"] = user_group_fairness(per_case, groups)
    out["per_case"] = per_case
    return out


def ndcg_ratios(user_fairness: Mapping[str, Any]) -> dict[str, float | None]:
    """min/max NDCG ratio per attribute: the gate's `fairness.user_ndcg_ratio.<attribute>`."""
    return {attr: (res.get("ratio") or {}).get("ndcg") for attr, res in user_fairness.items()}


# ------------------------------------------------------------------------------------ paired uncertainty


def eligible_groups(user_fairness: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per attribute, the groups its min/max ratio compares (known groups with enough cases, decided once on the
    hold-out), so every ranker and every resample compares the same groups."""
    return {
        attr: sorted(g for g in res.get("by_group", {}) if g not in set(res.get("excluded", [])))
        for attr, res in user_fairness.items()
    }


def group_labels(groups: pd.DataFrame) -> pd.DataFrame:
    """The audit groups as the fairness audit names them (missing -> "unknown"), one text column per attribute."""
    return pd.DataFrame({attr: _group_labels(groups[attr]).to_numpy() for attr in groups.columns})


def paired_draws(
    ndcg: Mapping[str, Sequence[float] | np.ndarray],
    groups: pd.DataFrame,
    eligible: Mapping[str, Sequence[str]],
    resamples: Resamples,
) -> dict[str, np.ndarray]:
    """Every ranker's NDCG and per-attribute group ratio on the same bootstrap resamples over shoppers.

    ``ndcg`` maps a ranker's name to its per-case NDCG (cases in the resamples' order); ``groups`` holds the
    cases' audit labels (``group_labels``). Keys: ``<ranker>.ndcg`` and ``<ranker>.ratio.<attribute>``. Resample b
    is the same shoppers for every key, so differences and ratios between keys are paired."""
    out: dict[str, np.ndarray] = {}
    for name, values in ndcg.items():
        out[f"{name}.ndcg"] = resamples.means(values)
        for attr, kept in eligible.items():
            out[f"{name}.ratio.{attr}"] = group_ratio_draws(values, groups[attr].to_numpy(), kept, resamples)
    return out


CANDIDATE = "candidate"
CHAMPION = "champion"


def gate_evidence(
    ndcg: Mapping[str, Sequence[float] | np.ndarray],
    groups: pd.DataFrame,
    eligible: Mapping[str, Sequence[str]],
    resamples: Resamples,
    *,
    best: str | None,
    best_non_private: str | None,
) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The gate's comparative metrics and their paired resamples, under the registry's names.

    ``ndcg`` holds per-case NDCG of "candidate", of the baselines named ``best`` (best shippable) and
    ``best_non_private``, and of "champion" when there is one. Returned (points, draws) share their keys:
    quality.ndcg_at_10, quality.best_baseline_ndcg_at_10, quality.best_non_private_baseline_ndcg_at_10,
    quality.price_of_privacy (candidate / best non-private), champion.ndcg_at_10, and the user-group ratios
    fairness.user_ndcg_ratio.<attribute> of the candidate and alternative.<best_baseline|champion>.<same> of the
    alternatives a fairness fallback compares with. Points are the hold-out's own figures (``hold_out``)."""
    roles = {
        CANDIDATE: CANDIDATE,
        "best_baseline": best,
        "best_non_private": best_non_private,
        CHAMPION: CHAMPION if CHAMPION in ndcg else None,
    }
    chosen = {role: name for role, name in roles.items() if name is not None}
    missing = sorted(name for name in chosen.values() if name not in ndcg)
    if missing:
        raise ValueError(f"no per-case NDCG for {missing}; pass every ranker the gate compares")
    series = {role: ndcg[name] for role, name in chosen.items()}
    draws_by, points_by = (paired_draws(series, groups, eligible, r) for r in (resamples, hold_out(resamples)))
    draws: dict[str, np.ndarray] = {}
    names = {
        CANDIDATE: "quality.ndcg_at_10",
        "best_baseline": "quality.best_baseline_ndcg_at_10",
        "best_non_private": "quality.best_non_private_baseline_ndcg_at_10",
        CHAMPION: "champion.ndcg_at_10",
    }
    for role in chosen:
        draws[names[role]] = draws_by[f"{role}.ndcg"]
    if "best_non_private" in chosen:
        draws["quality.price_of_privacy"] = ratio_draws(draws_by["candidate.ndcg"], draws_by["best_non_private.ndcg"])
    for attr in eligible:
        draws[f"fairness.user_ndcg_ratio.{attr}"] = draws_by[f"candidate.ratio.{attr}"]
        for role in ("best_baseline", CHAMPION):
            if role in chosen:
                draws[f"{ALTERNATIVE_PREFIX}{role}.fairness.user_ndcg_ratio.{attr}"] = draws_by[f"{role}.ratio.{attr}"]
    points_draws = points_by
    points: dict[str, float | None] = {}
    for key in draws:
        role, stat = _source_of(key, chosen)
        value = (
            ratio_draws(points_draws["candidate.ndcg"], points_draws["best_non_private.ndcg"])
            if stat == "price"
            else points_draws[f"{role}.{stat}"]
        )
        points[key] = None if not np.isfinite(value[0]) else float(value[0])
    return points, draws


def _source_of(key: str, chosen: Mapping[str, str]) -> tuple[str, str]:
    """(role, statistic) behind one of gate_evidence's keys."""
    if key == "quality.price_of_privacy":
        return CANDIDATE, "price"
    if key.startswith("fairness.user_ndcg_ratio."):
        return CANDIDATE, "ratio." + key.rsplit(".", 1)[1]
    if key.startswith(ALTERNATIVE_PREFIX):
        role = key[len(ALTERNATIVE_PREFIX) :].split(".", 1)[0]
        return role, "ratio." + key.rsplit(".", 1)[1]
    role = {
        "quality.ndcg_at_10": CANDIDATE,
        "quality.best_baseline_ndcg_at_10": "best_baseline",
        "quality.best_non_private_baseline_ndcg_at_10": "best_non_private",
        "champion.ndcg_at_10": CHAMPION,
    }[key]
    return role, "ndcg"
