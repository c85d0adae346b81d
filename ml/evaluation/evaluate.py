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
from ml.evaluation.fairness import activity_groups, provider_exposure, user_group_fairness
from ml.evaluation.metrics import beyond_accuracy, per_case_metrics, summarize


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
