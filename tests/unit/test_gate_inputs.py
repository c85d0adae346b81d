"""The gate's inputs from the stage outputs: point metrics, the reasons a metric could not be measured, and the
search metrics with their paired resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.gate.checks import evaluate_check
from ml.gate.inputs import champion_ratios, gate_metrics, search_points, unmeasurable_ratios
from ml.gate.policy import Check

TRAINED = {"privacy": {"dp": True, "unit": "user", "epsilon": 7.9, "delta": 1e-5}, "n_users": 2_000}
REGISTERED = {"pii_findings": 0, "smoke": {"ok": True}}


def _evaluated(provider_ratio: float | None) -> dict:
    return {
        "k": 10,
        "candidate": {"metrics": {"ndcg_at_10": 0.11}, "provider": {"tail_relevance_share": 0.0}, "user_fairness": {}},
        "best_baseline_ndcg": 0.09,
        "mia": {"auc": 0.51},
        "provider_exposure_ratio": provider_ratio,
        "drift": {"share_drifted": 0.2},
        "user_ndcg_ratio": {"gender": 0.93},
    }


def test_a_ratio_the_hold_out_cannot_measure_is_skipped_only_with_its_reason():
    """Coat: every case has a full 10-item history, so there is no light/heavy split to compare."""
    check = Check(
        name="fairness_user_activity",
        metric="fairness.user_ndcg_ratio.activity",
        comparator=">=",
        threshold=0.8,
        fallback="no_worse_than_alternatives",
        skip_if_no_match=True,
    )
    reason = unmeasurable_ratios(
        {
            "activity": {"by_group": {"light": {"ndcg": 0.02, "n": 860}}, "ratio": {"ndcg": None}, "excluded": []},
            "gender": {"by_group": {}, "ratio": {"ndcg": 0.9}},
        }
    )
    assert list(reason) == ["unmeasurable.fairness.user_ndcg_ratio.activity"]
    assert "fewer than two groups" in reason["unmeasurable.fairness.user_ndcg_ratio.activity"]
    assert "light 860" in reason["unmeasurable.fairness.user_ndcg_ratio.activity"]
    (skipped,) = evaluate_check(check, {"fairness.user_ndcg_ratio.activity": None, **reason})
    assert skipped.status == "skipped" and "not measurable on this hold-out: fewer than two groups" in skipped.message
    (failed,) = evaluate_check(check, {"fairness.user_ndcg_ratio.activity": None})  # no reason: a missing metric
    assert failed.status == "fail" and "never passes" in failed.message
    strict = Check(name="a", metric="fairness.user_ndcg_ratio.activity", comparator=">=", threshold=0.8)
    (failed,) = evaluate_check(strict, {"fairness.user_ndcg_ratio.activity": None, **reason})  # not opted in
    assert failed.status == "fail"


def test_the_stage_outputs_give_the_point_metrics_and_the_evidence_fills_only_the_gaps():
    evidence = {"champion.ndcg_at_10": 0.1, "quality.ndcg_at_10": 0.5, "alternative.champion.x": 1.0}
    metrics = gate_metrics(TRAINED, _evaluated(0.8), REGISTERED, evidence)
    assert metrics["quality.ndcg_at_10"] == 0.11  # the evaluation's own figure, not overwritten
    assert metrics["champion.ndcg_at_10"] == 0.1 and metrics["alternative.champion.x"] == 1.0
    assert metrics["privacy.delta_bound"] == pytest.approx(1 / 2_000)
    assert metrics["fairness.user_ndcg_ratio.gender"] == 0.93 and metrics["serving.smoke_ok"] is True
    assert not any(key.startswith("unmeasurable.") for key in metrics)
    unmeasured = gate_metrics(TRAINED, _evaluated(None), REGISTERED, {})
    assert "long-tail brand" in unmeasured["unmeasurable.fairness.provider_exposure_ratio"]


def test_search_without_cases_is_unmeasurable_with_its_reason_and_a_lost_frame_is_an_error():
    points, draws = search_points({"n_cases": 0, "unmeasurable": "no search events"}, None, 7, None)
    assert (
        points
        == {
            "unmeasurable.search.ndcg_at_10": "no search events",
            "unmeasurable.search.provider_exposure_ratio": "no search events",
        }
        and draws == {}
    )
    with pytest.raises(ValueError, match="no per-case frame"):
        search_points({"n_cases": 3, "best_baseline": "bm25", "candidate": {}}, None, 7, None)


def test_search_points_pair_the_candidate_with_the_best_baseline():
    rng = np.random.default_rng(0)
    per_case = pd.DataFrame(
        {
            "user_id": [f"u{i % 30}" for i in range(60)],
            "case_row": np.arange(60),
            "ndcg.candidate": rng.random(60),
            "ndcg.bm25": rng.random(60) / 2,
        }
    )
    searched = {"n_cases": 60, "best_baseline": "bm25", "candidate": {"provider": {"ratio": 0.7}}}
    points, draws = search_points(searched, per_case, 7, None)
    assert points["search.ndcg_at_10"] == pytest.approx(per_case["ndcg.candidate"].mean())
    assert points["search.provider_exposure_ratio"] == 0.7 and draws


def test_the_champions_ratios_are_read_from_the_evidence():
    evidence = {"alternative.champion.fairness.user_ndcg_ratio.gender": 0.9, "fairness.user_ndcg_ratio.gender": 0.8}
    assert champion_ratios(evidence) == {"gender": 0.9}
