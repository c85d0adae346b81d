"""The gate's metrics from the run's stage outputs: what the policy's checks read, and for a metric that could not
be measured on this hold-out the reason (`unmeasurable.<metric>`), so its check skips saying why instead of failing
on a missing value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def gate_metrics(
    trained: dict[str, Any], evaluated: dict[str, Any], registered: dict[str, Any], evidence: dict[str, Any]
) -> dict[str, Any]:
    """The point metrics of the train, evaluate and register outputs, with the paired `evidence`
    (ml.evaluation.evaluate.gate_evidence) filling whatever they leave empty."""
    privacy = trained["privacy"]
    metrics: dict[str, Any] = {
        "quality.ndcg_at_10": evaluated["candidate"]["metrics"][f"ndcg_at_{evaluated['k']}"],
        "quality.best_baseline_ndcg_at_10": evaluated["best_baseline_ndcg"],
        "champion.ndcg_at_10": None,
        "privacy.dp": bool(privacy["dp"]),
        "privacy.unit": privacy["unit"],
        "privacy.epsilon": privacy.get("epsilon"),
        "privacy.delta": privacy.get("delta"),
        "privacy.delta_bound": 1.0 / max(1, trained["n_users"]),
        "privacy.mia_auc": evaluated["mia"]["auc"],
        "privacy.pii_findings": registered["pii_findings"],
        "fairness.provider_exposure_ratio": evaluated["provider_exposure_ratio"],
        "drift.share": evaluated["drift"]["share_drifted"],
        "serving.smoke_ok": bool(registered["smoke"]["ok"]),
    }
    metrics.update({f"fairness.user_ndcg_ratio.{a}": r for a, r in evaluated["user_ndcg_ratio"].items()})
    metrics.update(unmeasurable_ratios(evaluated["candidate"].get("user_fairness", {})))
    if evaluated["provider_exposure_ratio"] is None:  # no target of the hold-out is a long-tail brand's item
        provider = evaluated["candidate"].get("provider") or {}
        metrics["unmeasurable.fairness.provider_exposure_ratio"] = (
            "no hold-out target is an item of a long-tail brand (tail relevance share "
            f"{provider.get('tail_relevance_share')}), so exposure cannot be compared with relevance; a catalogue "
            "without brands (amazon2018-games) has no providers to compare"
        )
    metrics.update({key: value for key, value in evidence.items() if key not in metrics or metrics[key] is None})
    return metrics


def unmeasurable_ratios(user_fairness: dict[str, Any]) -> dict[str, str]:
    """For each attribute whose min/max ratio could not be measured on this hold-out, why
    (`unmeasurable.fairness.user_ndcg_ratio.<attribute>`): fewer than two groups with enough cases (every case of
    Coat has a full 10-item history, so there is no light/heavy split), or a best group at 0. A check with
    `skip_if_no_match` skips such a metric saying why; without a recorded reason a missing metric still fails."""
    out = {}
    for attr, res in user_fairness.items():
        if (res.get("ratio") or {}).get("ndcg") is not None:
            continue
        groups = ", ".join(f"{g} {v.get('n', '?')}" for g, v in (res.get("by_group") or {}).items()) or "none"
        excluded = res.get("excluded") or []
        why = (
            f"fewer than two groups with enough cases to compare (cases per group: {groups}"
            + (f"; left out: {', '.join(map(str, excluded))}" if excluded else "")
            + ")"
        )
        if len([g for g in (res.get("by_group") or {}) if g not in excluded]) >= 2:
            why = f"the best-served group's NDCG is 0, so no ratio is defined (cases per group: {groups})"
        out[f"unmeasurable.fairness.user_ndcg_ratio.{attr}"] = why
    return out


def search_points(
    searched: dict[str, Any], per_case: pd.DataFrame | None, seed: int, champion_ndcg: list[float] | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The gate's search metrics (search.ndcg_at_10, search.best_baseline_ndcg_at_10, champion.search_ndcg_at_10,
    search.provider_exposure_ratio) with their paired resamples over `per_case` (the search per-case frame);
    where search could not be measured, the reason under unmeasurable.<metric>."""
    from ml.evaluation.search import search_gate_evidence

    if not searched.get("n_cases"):
        why = searched.get("unmeasurable", "the evaluation recorded no search figures")
        return {f"unmeasurable.{m}": why for m in ("search.ndcg_at_10", "search.provider_exposure_ratio")}, {}
    if per_case is None:
        raise ValueError(f"the evaluation measured {searched['n_cases']} search cases but left no per-case frame")
    points, draws = search_gate_evidence(per_case, seed, searched["best_baseline"], champion_ndcg)
    provider = searched["candidate"].get("provider") or {}
    if provider.get("ratio") is not None:
        points["search.provider_exposure_ratio"] = provider["ratio"]
    else:
        points["unmeasurable.search.provider_exposure_ratio"] = (
            "no hold-out search target is an item of a long-tail brand (tail relevance share "
            f"{provider.get('tail_relevance_share')}), so exposure cannot be compared with relevance"
        )
    return points, draws


def champion_ratios(evidence: dict[str, Any]) -> dict[str, float | None]:
    """The champion's user-group NDCG ratios among the paired evidence, by attribute."""
    prefix = "alternative.champion.fairness.user_ndcg_ratio."
    return {key[len(prefix) :]: value for key, value in evidence.items() if key.startswith(prefix)}
