"""Search in the gate: its evidence over the searching shoppers, the default policy's search checks, the card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.evaluation.search import (
    CHAMPION_SEARCH_NDCG,
    SEARCH_BEST_BASELINE,
    SEARCH_NDCG,
    search_gate_evidence,
    zero_result_rate,
)
from ml.gate.decision import decide
from ml.gate.policy import load_policy
from ml.registry.card_sections import search_section


def _per_case(candidate: list[float], baseline: list[float]) -> pd.DataFrame:
    users = [f"u{i // 2}" for i in range(len(candidate))]  # two searches per shopper
    return pd.DataFrame(
        {
            "case_row": np.arange(len(candidate)),
            "user_id": users,
            "ndcg.candidate": candidate,
            "ndcg.search_bm25": baseline,
        }
    )


def test_search_evidence_points_are_the_hold_out_means_and_draws_are_paired() -> None:
    rng = np.random.default_rng(0)
    cand = rng.random(40).tolist()
    base = [c - 0.1 for c in cand]  # exactly 0.1 below, case by case
    champion = [c + 0.05 for c in cand]
    points, draws = search_gate_evidence(_per_case(cand, base), seed=3, best="search_bm25", champion_ndcg=champion)
    assert points[SEARCH_NDCG] == pytest.approx(np.mean(cand))
    assert points[SEARCH_BEST_BASELINE] == pytest.approx(np.mean(cand) - 0.1)
    assert points[CHAMPION_SEARCH_NDCG] == pytest.approx(np.mean(cand) + 0.05)
    # paired: the difference is the same on every resample, however much each side moves
    diff = draws[SEARCH_NDCG] - draws[SEARCH_BEST_BASELINE]
    assert np.allclose(diff, 0.1) and draws[SEARCH_NDCG].std() > 0
    points, draws = search_gate_evidence(_per_case(cand, base), seed=3, best="search_bm25")
    assert CHAMPION_SEARCH_NDCG not in points and CHAMPION_SEARCH_NDCG not in draws


def _metrics(**search: object) -> dict:
    """Every non-search metric of the default policy at a passing value."""
    return {
        "quality.ndcg_at_10": 0.2,
        "quality.best_baseline_ndcg_at_10": 0.1,
        "quality.price_of_privacy": 1.1,
        "privacy.dp": True,
        "privacy.unit": "user",
        "privacy.epsilon": 7.0,
        "privacy.delta": 1e-6,
        "privacy.delta_bound": 1e-4,
        "privacy.mia_auc": 0.5,
        "privacy.pii_findings": 0,
        "fairness.provider_exposure_ratio": 0.9,
        "fairness.user_ndcg_ratio.activity": 0.9,
        "drift.share": 0.0,
        "serving.smoke_ok": True,
        **search,
    }


QUALITY_DRAWS = {
    "quality.ndcg_at_10": np.full(5, 0.2),
    "quality.best_baseline_ndcg_at_10": np.full(5, 0.1),
    "fairness.user_ndcg_ratio.activity": np.full(5, 0.9),
}


def test_a_candidate_that_breaks_search_is_refused_even_with_better_recommendations() -> None:
    policy = load_policy(None)
    rng = np.random.default_rng(1)
    base = rng.random(60).tolist()
    broken = [b * 0.5 for b in base]  # recommendations fine, search half as good as BM25
    points, draws = search_gate_evidence(_per_case(broken, base), seed=0, best="search_bm25")
    decision = decide(policy, {**_metrics(**points), "search.provider_exposure_ratio": 0.9}, {**QUALITY_DRAWS, **draws})
    assert decision.status == "failed"
    assert decision.blocking_failures == ["search_quality_vs_baseline"]
    better = [b * 1.3 + 0.05 for b in base]
    points, draws = search_gate_evidence(_per_case(better, base), seed=0, best="search_bm25")
    passed = decide(policy, {**_metrics(**points), "search.provider_exposure_ratio": 0.9}, {**QUALITY_DRAWS, **draws})
    assert passed.status == "passed"


def test_search_checks_skip_saying_why_where_search_cannot_be_measured_and_fail_without_a_reason() -> None:
    policy = load_policy(None)
    why = "the hold-out holds no search followed by a click"
    decision = decide(
        policy,
        _metrics(**{"unmeasurable.search.ndcg_at_10": why, "unmeasurable.search.provider_exposure_ratio": why}),
        QUALITY_DRAWS,
    )
    search = {r.name: r for r in decision.checks if r.name.startswith("search_")}
    assert set(search) == {"search_quality_vs_baseline", "search_quality_vs_champion", "search_fairness_provider"}
    assert all(r.status == "skipped" and why in r.message for r in search.values())
    assert decision.status == "passed"
    silent = decide(policy, _metrics(), QUALITY_DRAWS)  # no search figure and no reason: never a silent pass
    assert {"search_quality_vs_baseline", "search_fairness_provider"} <= set(silent.blocking_failures)


def test_zero_result_rate_counts_empty_rankings() -> None:
    assert zero_result_rate([["a"], [], ["b", "c"], []]) == 0.5
    assert zero_result_rate([]) == 0.0


def test_the_card_search_section_shows_the_table_or_why_not() -> None:
    lines = search_section({"n_cases": 0, "unmeasurable": "no search events"}, None, 10)
    assert lines[0] == "## Search on the hold-out" and "Not measured: no search events" in lines[1]
    entry = {"value": 0.6, "lower": 0.55, "upper": 0.65}
    searched = {
        "n_cases": 50,
        "best_baseline": "search_bm25",
        "candidate": {
            "metrics": {"ndcg_at_10": 0.6, "recall_at_10": 0.8, "mrr": 0.5},
            "zero_result_rate": 0.0,
            "beyond": {"coverage": 0.3, "novelty": 9.0},
            "provider": {"tail_exposure_share": 0.2, "tail_relevance_share": 0.25, "ratio": 0.8},
        },
        "dense_only": {"ndcg_at_10": 0.58, "recall_at_10": 0.7, "mrr": 0.45},
        "baselines": {
            "search_bm25": {"metrics": {"ndcg_at_10": 0.5, "recall_at_10": 0.6, "mrr": 0.4}, "zero_result_rate": 0.1}
        },
        "uncertainty": {
            "ndcg": {"candidate": entry, "search_bm25": {"value": 0.5, "lower": 0.45, "upper": 0.55}},
            "candidate_minus": {"search_bm25": {"value": 0.1, "lower": 0.05, "upper": 0.15}},
        },
    }
    text = "\n".join(
        search_section(
            searched, {"version": "3", "search_metrics": {"ndcg_at_10": 0.59, "recall_at_10": 0.7, "mrr": 0.4}}, 10
        )
    )
    assert "| **candidate** | 0.6000 [0.5500, 0.6500] |" in text
    assert "| search_bm25 (**bar**) | 0.5000 [0.4500, 0.5500] | 0.1000 [0.0500, 0.1500] |" in text
    assert "champion v3 (re-evaluated) | 0.5900" in text
    assert "ratio 0.800" in text and "0.100 |" in text
