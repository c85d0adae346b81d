"""Every ranker on the same hold-out: the candidate beside its baselines, with paired intervals over shoppers.

`compare_rankings` is the evaluate stage's comparison without a trained model: top-k lists in (the candidate's and
each baseline's, one list per hold-out case), and out the figures the gate reads. Each ranker goes through
`evaluate_rankings`; the bar is the best baseline the policy would itself ship (`baselines.SHIPPABLE`) and the price
of privacy is taken against the best non-private one; every ranker's per-case NDCG is kept (the per-case frame, in
the cases' order) so the evaluate and gate stages draw the very same bootstrap resamples over shoppers. Being pure,
it lets a reviewer (or a test) put any rankings, a constructed candidate's included, through the chain's own code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml.evaluation import baselines as bl
from ml.evaluation.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Resamples,
    hold_out,
    ratio_draws,
    shopper_resamples,
    summary,
)
from ml.evaluation.evaluate import eligible_groups, evaluate_rankings, group_labels, paired_draws

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
GROUP_PREFIX, NDCG_PREFIX = "group.", "ndcg."  # per-case frame columns: group.<attribute>, ndcg.<ranker>


def per_case_resamples(per_case: pd.DataFrame, seed: int) -> Resamples:
    """The bootstrap resamples over the hold-out's shoppers: the same in evaluate and gate (same cases, same seed)."""
    return shopper_resamples(per_case["user_id"].to_numpy(), DEFAULT_RESAMPLES, seed)


def per_case_groups(per_case: pd.DataFrame) -> pd.DataFrame:
    """The cases' audit labels, one column per attribute, from the per-case frame's group.<attribute> columns."""
    return pd.DataFrame(
        {c[len(GROUP_PREFIX) :]: per_case[c].to_numpy() for c in per_case.columns if c.startswith(GROUP_PREFIX)}
    )


def compare_rankings(
    candidate: Sequence[Sequence[str]],
    baselines: Mapping[str, Sequence[Sequence[str]]],
    learns: Mapping[str, str],
    cases: pd.DataFrame,
    k: int,
    *,
    n_catalog: int,
    item_popularity: Mapping[str, float],
    item_tier: Mapping[str, str],
    groups: pd.DataFrame,
    seed: int,
    item_vectors: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The candidate's and every baseline's figures on the hold-out, the bar, and their paired uncertainty.

    ``candidate`` and each of ``baselines`` (name -> lists) hold one top-k list per row of ``cases``; ``learns``
    says what each baseline learns from shoppers (``baselines.LEARNS``). Returns ``candidate`` (evaluate_rankings'
    result, per-case frame included), ``baselines`` (name -> metrics, beyond, provider, learns, user_fairness),
    ``per_case`` (user_id, group.<attribute>, ndcg.<ranker>), ``best_baseline`` (best shippable),
    ``best_non_private_baseline`` (or None) and ``uncertainty`` (``uncertainty``). Raises when no baseline is
    shippable: the quality check would have no bar."""
    unknown = sorted(set(baselines) - set(learns))
    if unknown:
        raise ValueError(
            f"baselines {unknown} do not say what they learn from shoppers: pass learns[name] as one "
            f"of {', '.join(bl.LEARNS)}"
        )
    if CANDIDATE in baselines:
        raise ValueError(f"a baseline may not be named {CANDIDATE!r}: that name is the candidate's")
    common: dict[str, Any] = {
        "n_catalog": n_catalog,
        "item_popularity": item_popularity,
        "item_tier": item_tier,
        "groups": groups,
    }
    result = evaluate_rankings(candidate, cases, k, item_vectors=item_vectors, **common)
    per_case = pd.DataFrame({"user_id": cases["user_id"].astype(str).to_numpy()})
    labels = group_labels(groups)
    for attr in labels.columns:
        per_case[f"{GROUP_PREFIX}{attr}"] = labels[attr].to_numpy()
    per_case[f"{NDCG_PREFIX}{CANDIDATE}"] = result["per_case"]["ndcg"].to_numpy()
    scored: dict[str, Any] = {}
    for name, lists in baselines.items():
        res = evaluate_rankings(lists, cases, k, **common)
        scored[name] = {
            "metrics": res["metrics"],
            "beyond": res["beyond"],
            "provider": res["provider"],
            "learns": learns[name],
            "user_fairness": res.get("user_fairness", {}),
        }
        per_case[f"{NDCG_PREFIX}{name}"] = res["per_case"]["ndcg"].to_numpy()
    ndcg_of = {n: r["metrics"][f"ndcg_at_{k}"] for n, r in scored.items()}
    best = bl.best_baseline(ndcg_of, dict(learns), bl.SHIPPABLE)
    best_non_private = bl.best_baseline(ndcg_of, dict(learns), (bl.NON_PRIVATE,))
    if best is None:
        raise ValueError("no shippable baseline (public or private) was evaluated: the quality check has no bar")
    eligible = eligible_groups(result.get("user_fairness", {}))
    return {
        "candidate": result,
        "baselines": scored,
        "per_case": per_case,
        "best_baseline": best,
        "best_non_private_baseline": best_non_private,
        "uncertainty": uncertainty(per_case, eligible, list(scored), best_non_private, seed),
    }


def uncertainty(
    per_case: pd.DataFrame,
    eligible: Mapping[str, list[str]],
    baselines: Sequence[str],
    best_non_private: str | None,
    seed: int,
) -> dict[str, Any]:
    """Every ranker's NDCG@k and user-group ratios with their intervals, the paired difference candidate - each
    baseline, and the price of privacy (candidate / ``best_non_private``), all on the same resamples over shoppers."""
    resamples = per_case_resamples(per_case, seed)
    rankers = [CANDIDATE, *baselines]
    ndcg = {n: per_case[f"{NDCG_PREFIX}{n}"].to_numpy() for n in rankers}
    groups = per_case_groups(per_case)
    draws = paired_draws(ndcg, groups, eligible, resamples)
    points = paired_draws(ndcg, groups, eligible, hold_out(resamples))

    def entry(values: np.ndarray, point: np.ndarray) -> dict[str, Any]:
        value = float(point[0])
        return summary(value if np.isfinite(value) else None, values, DEFAULT_CONFIDENCE)

    out: dict[str, Any] = {
        "method": {
            "unit": "shopper",
            "n_resamples": DEFAULT_RESAMPLES,
            "seed": seed,
            "confidence": DEFAULT_CONFIDENCE,
            "n_shoppers": resamples.n_shoppers,
            "n_cases": len(per_case),
            "interval": "percentile, paired: every ranker on the same resamples",
        },
        "eligible_groups": dict(eligible),
        "ndcg": {n: entry(draws[f"{n}.ndcg"], points[f"{n}.ndcg"]) for n in rankers},
        "candidate_minus": {
            n: entry(draws[f"{CANDIDATE}.ndcg"] - draws[f"{n}.ndcg"], points[f"{CANDIDATE}.ndcg"] - points[f"{n}.ndcg"])
            for n in baselines
        },
        "user_ndcg_ratio": {
            n: {a: entry(draws[f"{n}.ratio.{a}"], points[f"{n}.ratio.{a}"]) for a in eligible} for n in rankers
        },
        "price_of_privacy": None,
    }
    if best_non_private:
        out["price_of_privacy"] = {
            "baseline": best_non_private,
            **entry(
                ratio_draws(draws[f"{CANDIDATE}.ndcg"], draws[f"{best_non_private}.ndcg"]),
                ratio_draws(points[f"{CANDIDATE}.ndcg"], points[f"{best_non_private}.ndcg"]),
            ),
        }
    return out
