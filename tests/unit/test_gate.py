"""The promotion gate: policy loading and validation, each check's outcome, the decision and its records."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ml.gate.checks import evaluate_check
from ml.gate.decision import GateDecision, decide
from ml.gate.policy import Check, Policy, PolicyError, load_policy, parse_policy
from ml.gate.result import CheckResult
from ml.gate.values import format_value

# A candidate that passes every default check, with hand-picked margins:
# baseline threshold 0.10 * 1.05 = 0.105 and champion threshold 0.115 - 0.01 = 0.105 (candidate 0.12).
GOOD = {
    "quality.ndcg_at_10": 0.12,
    "quality.best_baseline_ndcg_at_10": 0.10,
    "quality.price_of_privacy": 1.02,
    "champion.ndcg_at_10": 0.115,
    "search.ndcg_at_10": 0.60,
    "search.best_baseline_ndcg_at_10": 0.55,
    "champion.search_ndcg_at_10": 0.595,
    "search.provider_exposure_ratio": 0.9,
    "privacy.dp": True,
    "privacy.unit": "user",
    "privacy.epsilon": 7.5,
    "privacy.delta": 1.0 / 3000**1.1,
    "privacy.delta_bound": 1.0 / 3000,
    "privacy.mia_auc": 0.55,
    "privacy.pii_findings": 0,
    "fairness.user_ndcg_ratio.gender": 0.91,
    "fairness.user_ndcg_ratio.age_band": 0.84,
    "fairness.user_ndcg_ratio.activity": 0.86,
    "fairness.provider_exposure_ratio": 0.88,
    "drift.share": 0.2,
    "serving.smoke_ok": True,
}
# Metrics the pipeline resamples (ml.evaluation.evaluate.gate_evidence); the others are single figures.
RESAMPLED = (
    "quality.",
    "champion.",
    "fairness.user_ndcg_ratio.",
    "alternative.",
    "search.ndcg",
    "search.best_baseline",
)


def draws_for(metrics: dict, spread: float = 0.0, n: int = 5) -> dict[str, np.ndarray]:
    """Resamples around each resampled metric's value: every metric moves by the same offsets (so differences
    between metrics are paired and exactly their point difference when ``spread`` is 0)."""
    offsets = np.linspace(-spread, spread, n)
    out = {}
    for key, value in metrics.items():
        if key.startswith(RESAMPLED) and value is not None:
            try:
                out[key] = float(str(value)) + offsets
            except ValueError:
                continue
    return out


def judge(policy: Policy, metrics: dict):
    """The decision with zero-width resamples: every interval is its point, so the rules read as before."""
    return decide(policy, metrics, draws_for(metrics))


# The house plan's table, as the default policy must encode it:
# name -> (metric, comparator, threshold, reference, factor, offset, blocking, skip_if_missing_reference)
HOUSE_PLAN = {
    "quality_vs_baseline": (
        "quality.ndcg_at_10",
        ">=",
        None,
        "quality.best_baseline_ndcg_at_10",
        1.05,
        0.0,
        True,
        False,
    ),
    "price_of_privacy": ("quality.price_of_privacy", ">=", 1.0, None, 1.0, 0.0, False, False),
    "quality_vs_champion": ("quality.ndcg_at_10", ">=", None, "champion.ndcg_at_10", 1.0, -0.01, True, True),
    "search_quality_vs_baseline": (
        "search.ndcg_at_10",
        ">=",
        None,
        "search.best_baseline_ndcg_at_10",
        1.0,
        0.0,
        True,
        False,
    ),
    "search_quality_vs_champion": (
        "search.ndcg_at_10",
        ">=",
        None,
        "champion.search_ndcg_at_10",
        1.0,
        -0.01,
        True,
        True,
    ),
    "privacy_dp": ("privacy.dp", "==", True, None, 1.0, 0.0, True, False),
    "privacy_unit": ("privacy.unit", "==", "user", None, 1.0, 0.0, True, False),
    "privacy_epsilon": ("privacy.epsilon", "<=", 8.0, None, 1.0, 0.0, True, False),
    "privacy_delta": ("privacy.delta", "<", None, "privacy.delta_bound", 1.0, 0.0, True, False),
    "privacy_mia": ("privacy.mia_auc", "<=", 0.60, None, 1.0, 0.0, True, False),
    "privacy_pii": ("privacy.pii_findings", "==", 0.0, None, 1.0, 0.0, True, False),
    "fairness_user_groups": ("fairness.user_ndcg_ratio.*", ">=", 0.80, None, 1.0, 0.0, True, False),
    "fairness_user_activity": ("fairness.user_ndcg_ratio.activity", ">=", 0.80, None, 1.0, 0.0, True, False),
    "fairness_provider": ("fairness.provider_exposure_ratio", ">=", 0.80, None, 1.0, 0.0, True, False),
    "search_fairness_provider": ("search.provider_exposure_ratio", ">=", 0.80, None, 1.0, 0.0, True, False),
    "drift": ("drift.share", "<=", 0.5, None, 1.0, 0.0, False, False),
    "serving_smoke": ("serving.smoke_ok", "==", True, None, 1.0, 0.0, True, False),
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(None)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the default policy ---------------------------------------------------------------------------------


def test_default_policy_encodes_the_house_plan_table(policy: Policy) -> None:
    assert policy.name == "vetted-default"
    assert [c.name for c in policy.checks] == list(HOUSE_PLAN)
    for check in policy.checks:
        got = (
            check.metric,
            check.comparator,
            check.threshold,
            check.reference,
            check.factor,
            check.offset,
            check.blocking,
            check.skip_if_missing_reference,
        )
        assert got == HOUSE_PLAN[check.name], check.name
        assert type(check.threshold) is type(HOUSE_PLAN[check.name][2]), check.name  # True is not 1.0
        assert check.description
        assert check.confidence == 0.95, check.name
    # the rules: beat the shippable bar with confidence; fail against the champion only with confidence;
    # fairness on the point estimate; activity may fall back on "no less fair than the alternatives"
    decide_on = {c.name: c.decide_on for c in policy.checks}
    assert decide_on == {
        **{name: "point" for name in HOUSE_PLAN},
        "quality_vs_baseline": "lower",
        "quality_vs_champion": "upper",
        "search_quality_vs_baseline": "lower",
        "search_quality_vs_champion": "upper",
    }
    fallback = {c.name: c.fallback for c in policy.checks if c.fallback != "none"}
    assert fallback == {"fairness_user_activity": "no_worse_than_alternatives"}
    groups = next(c for c in policy.checks if c.name == "fairness_user_groups")
    assert groups.exclude == ("activity",) and groups.skip_if_no_match


def test_default_policy_label_is_name_and_hash_of_the_packaged_file(policy: Policy) -> None:
    data = resources.files("ml.gate").joinpath("default_policy.yaml").read_bytes()
    assert policy.sha256 == hashlib.sha256(data).hexdigest()
    assert policy.label == f"vetted-default@{policy.sha256[:12]}"
    assert load_policy("") == policy  # RunConfig.policy defaults to "": the default policy


# --- decisions on the default policy -------------------------------------------------------------------


def test_a_good_candidate_passes_every_check(policy: Policy) -> None:
    decision = judge(policy, GOOD)
    assert decision.status == "passed" and decision.passed
    assert decision.blocking_failures == [] and decision.warnings == [] and decision.skipped == []
    assert all(r.status == "pass" and r.passed is True for r in decision.checks)
    names = [r.name for r in decision.checks]
    assert "fairness_user_groups.age_band" in names and "fairness_user_groups.gender" in names
    assert "fairness_user_groups.activity" not in names and "fairness_user_activity" in names
    assert len(names) == len(HOUSE_PLAN) + 1  # the wildcard expands to two attributes (activity excluded)


def test_tags_name_status_policy_and_every_check(policy: Policy) -> None:
    tags = judge(policy, GOOD).to_tags()
    assert tags["gate.status"] == "passed"
    assert tags["gate.policy"] == policy.label
    assert tags["gate.quality_vs_baseline"] == (
        "0.12 / >= 0.105 / margin 0.015 [0.015, 0.015] at 95%, on the lower 95% bound / pass"
    )
    assert tags["gate.quality_vs_champion"] == (
        "0.12 / >= 0.105 / margin 0.015 [0.015, 0.015] at 95%, on the upper 95% bound / pass"
    )
    assert tags["gate.privacy_dp"] == "true / == true / pass"
    assert tags["gate.privacy_unit"] == "user / == user / pass"
    assert tags["gate.privacy_epsilon"] == "7.5 / <= 8 / pass"
    assert tags["gate.privacy_delta"] == "0.0001497 / < 0.0003333 / pass"
    assert tags["gate.privacy_pii"] == "0 / == 0 / pass"
    assert tags["gate.fairness_user_groups.age_band"] == (
        "0.84 / >= 0.8 / margin 0.04 [0.04, 0.04] at 95%, on the point estimate / pass"
    )
    assert tags["gate.drift"] == "0.2 / <= 0.5 / pass"
    assert all(isinstance(v, str) for v in tags.values())
    assert len(tags) == 2 + len(HOUSE_PLAN) + 1


# Each blocking check failing alone, with the hand-worked distance from its threshold. The quality checks decide
# on an interval bound (here as wide as the point: zero-width resamples), so they say which bound missed 0.
FAILING_ALONE = {
    "quality_vs_baseline": (
        {"quality.best_baseline_ndcg_at_10": 0.116},
        "the lower 95% bound of the margin is 0.0018 below 0",  # 0.12 - 0.1218
    ),
    "quality_vs_champion": (
        {"champion.ndcg_at_10": 0.14},
        "the upper 95% bound of the margin is 0.01 below 0",  # 0.12 - 0.13
    ),
    # a candidate that improves recommendations but breaks search is refused
    "search_quality_vs_baseline": (
        {"search.best_baseline_ndcg_at_10": 0.62},
        "the lower 95% bound of the margin is 0.02 below 0",  # 0.60 - 0.62
    ),
    "search_quality_vs_champion": (
        {"champion.search_ndcg_at_10": 0.63},
        "the upper 95% bound of the margin is 0.02 below 0",  # 0.60 - (0.63 - 0.01)
    ),
    "search_fairness_provider": ({"search.provider_exposure_ratio": 0.6}, "short by 0.2"),
    "privacy_dp": ({"privacy.dp": False}, "expected == true, got false"),
    "privacy_unit": ({"privacy.unit": "example"}, "expected == user, got example"),
    "privacy_epsilon": ({"privacy.epsilon": 8.5}, "over by 0.5"),
    "privacy_delta": ({"privacy.delta": 1.0 / 3000}, "equal to the threshold; must be strictly below"),
    "privacy_mia": ({"privacy.mia_auc": 0.61}, "over by 0.01"),
    "privacy_pii": ({"privacy.pii_findings": 3}, "off by 3"),
    "fairness_user_groups.gender": ({"fairness.user_ndcg_ratio.gender": 0.79}, "short by 0.01"),
    "fairness_user_activity": ({"fairness.user_ndcg_ratio.activity": 0.7}, "short by 0.1"),  # no alternative given
    "fairness_provider": ({"fairness.provider_exposure_ratio": 0.5}, "short by 0.3"),
    "serving_smoke": ({"serving.smoke_ok": False}, "expected == true, got false"),
}


def test_the_failing_cases_cover_every_blocking_check(policy: Policy) -> None:
    blocking = {c.name for c in policy.checks if c.blocking}
    covered = {name.split(".")[0] for name in FAILING_ALONE}
    assert covered == blocking


@pytest.mark.parametrize("name", list(FAILING_ALONE))
def test_each_blocking_check_failing_alone_fails_the_gate_and_is_named(policy: Policy, name: str) -> None:
    change, how_far = FAILING_ALONE[name]
    decision = judge(policy, {**GOOD, **change})
    assert decision.status == "failed"
    assert decision.blocking_failures == [name]
    failed = next(r for r in decision.checks if r.name == name)
    assert failed.status == "fail" and failed.passed is False and failed.blocking
    assert failed.shortfall() == how_far
    assert how_far in failed.message
    assert decision.to_tags()[f"gate.{name}"].endswith(" / fail")
    assert failed.rule == "threshold"
    assert f"| {name} |" in decision.summary_markdown()
    assert f"**FAIL**: {how_far}" in decision.summary_markdown()
    assert all(r.status == "pass" for r in decision.checks if r.name != name)


def test_a_failing_gap_is_hand_worked(policy: Policy) -> None:
    decision = judge(policy, {**GOOD, "quality.best_baseline_ndcg_at_10": 0.116})
    result = next(r for r in decision.checks if r.name == "quality_vs_baseline")
    assert result.threshold == pytest.approx(0.1218)
    assert result.gap == pytest.approx(0.0018)
    assert "quality.best_baseline_ndcg_at_10 x 1.05" in result.message


def test_a_failing_warning_check_does_not_block(policy: Policy) -> None:
    decision = judge(policy, {**GOOD, "drift.share": 0.7})
    assert decision.status == "passed"
    assert decision.blocking_failures == []
    assert decision.warnings == ["drift"]
    drift = next(r for r in decision.checks if r.name == "drift")
    assert (drift.status, drift.passed, drift.blocking) == ("warn", False, False)
    assert drift.tag_value == "0.7 / <= 0.5 / warn"
    assert "warn: over by 0.2" in decision.summary_markdown()


def test_warning_and_blocking_failure_together(policy: Policy) -> None:
    decision = judge(policy, {**GOOD, "drift.share": 0.7, "privacy.epsilon": 10})
    assert decision.status == "failed"
    assert decision.blocking_failures == ["privacy_epsilon"]
    assert decision.warnings == ["drift"]


def test_first_run_without_a_champion_skips_and_says_so(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "champion.ndcg_at_10"}
    decision = judge(policy, metrics)
    assert decision.status == "passed"
    assert decision.skipped == ["quality_vs_champion"]
    skipped = next(r for r in decision.checks if r.name == "quality_vs_champion")
    assert skipped.status == "skipped" and skipped.passed is None
    assert skipped.message.startswith("no champion yet: skipped")
    assert decision.to_tags()["gate.quality_vs_champion"] == "0.12 / >= n/a / skipped (no champion yet)"
    assert "skipped: no champion yet" in decision.summary_markdown()


def test_a_champion_recorded_as_none_is_no_champion(policy: Policy) -> None:
    decision = judge(policy, {**GOOD, "champion.ndcg_at_10": None})
    assert decision.skipped == ["quality_vs_champion"]


def test_a_skipped_champion_check_still_fails_when_the_candidate_metric_is_missing(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if k not in ("champion.ndcg_at_10", "quality.ndcg_at_10")}
    decision = judge(policy, metrics)
    assert decision.skipped == []
    assert decision.blocking_failures == ["quality_vs_baseline", "quality_vs_champion"]


# Every metric but the champion's (its absence means "first run") and the per-attribute fairness ratios
# (the wildcard checks the attributes present; dropping all of them is tested below).
@pytest.mark.parametrize(
    "key",
    [
        k
        for k in GOOD
        if k not in ("champion.ndcg_at_10", "champion.search_ndcg_at_10")
        and not k.startswith("fairness.user_ndcg_ratio.")
    ],
)
def test_no_metric_can_go_missing_silently(policy: Policy, key: str) -> None:
    metrics = {k: v for k, v in GOOD.items() if k != key}
    decision = judge(policy, metrics)
    flagged = [r for r in decision.checks if r.status in ("fail", "warn")]
    assert flagged, f"dropping {key} went unnoticed"
    assert all(key in r.message and "missing" in r.message for r in flagged)
    warning = {
        "drift.share": ("drift", "missing / <= 0.5 / warn"),
        "quality.price_of_privacy": ("price_of_privacy", "missing / >= 1 / warn"),
    }
    if key in warning:  # the warning checks: a warning, still not a pass
        name, tag = warning[key]
        assert decision.status == "passed" and decision.warnings == [name]
        assert flagged[0].tag_value == tag
    else:
        assert decision.status == "failed"


def test_a_missing_metric_fails_with_its_name(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "privacy.mia_auc"}
    decision = judge(policy, metrics)
    assert decision.blocking_failures == ["privacy_mia"]
    result = next(r for r in decision.checks if r.name == "privacy_mia")
    assert result.value is None
    assert result.message == "metric 'privacy.mia_auc' is missing: fail; a missing metric never passes"
    assert result.tag_value == "missing / <= 0.6 / fail"
    assert "privacy.mia_auc missing" in decision.summary_markdown()


def test_a_missing_reference_fails_unless_the_check_may_skip(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "privacy.delta_bound"}
    decision = judge(policy, metrics)
    assert decision.blocking_failures == ["privacy_delta"]
    result = next(r for r in decision.checks if r.name == "privacy_delta")
    assert "reference metric 'privacy.delta_bound' is missing" in result.message


# --- wildcard expansion --------------------------------------------------------------------------------

WILDCARD = Check(name="groups", metric="fairness.user_ndcg_ratio.*", comparator=">=", threshold=0.8)


def test_wildcard_expands_to_one_check_per_attribute_in_name_order() -> None:
    metrics = {
        "fairness.user_ndcg_ratio.region": 0.95,
        "fairness.user_ndcg_ratio.gender": 0.81,
        "fairness.user_ndcg_ratio.age_band": 0.6,
        "fairness.user_ndcg_ratio_other": 0.1,  # not under the prefix
        "fairness.provider_exposure_ratio": 0.1,
    }
    results = evaluate_check(WILDCARD, metrics)
    assert [r.name for r in results] == ["groups.age_band", "groups.gender", "groups.region"]
    assert [r.metric for r in results] == [
        "fairness.user_ndcg_ratio.age_band",
        "fairness.user_ndcg_ratio.gender",
        "fairness.user_ndcg_ratio.region",
    ]
    assert [r.status for r in results] == ["fail", "pass", "pass"]


def test_a_wildcard_matching_nothing_is_a_missing_metric() -> None:
    metrics = {"fairness.user_ndcg_ratio": 0.9, "fairness.user_ndcg_ratio.": 0.9, "quality.ndcg_at_10": 0.2}
    (result,) = evaluate_check(WILDCARD, metrics)
    assert (result.name, result.status, result.passed, result.value) == ("groups", "fail", False, None)
    assert "no metric matches 'fairness.user_ndcg_ratio.*'" in result.message


def test_default_policy_without_fairness_metrics_fails_the_user_group_check(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if not k.startswith("fairness.user_ndcg_ratio.")}
    decision = judge(policy, metrics)
    # activity is always measured, so its absence fails; no protected attribute recorded is skipped, and says so
    assert decision.blocking_failures == ["fairness_user_activity"]
    assert decision.skipped == ["fairness_user_groups"]
    assert decision.to_tags()["gate.fairness_user_groups"] == "missing / >= 0.8 / skipped (nothing to check)"


# --- decisions on an interval bound ---------------------------------------------------------------------
# Two resamples [x0, x1]: the 95% percentile interval (linear interpolation) is
# [x0 + 0.025 (x1 - x0), x1 - 0.025 (x1 - x0)], so every bound below is worked by hand.

VS_BASELINE = Check(
    name="q",
    metric="quality.ndcg_at_10",
    comparator=">=",
    reference="quality.best_baseline_ndcg_at_10",
    factor=1.05,
    decide_on="lower",
)
VS_CHAMPION = Check(
    name="c",
    metric="quality.ndcg_at_10",
    comparator=">=",
    reference="champion.ndcg_at_10",
    offset=-0.01,
    decide_on="upper",
    skip_if_missing_reference=True,
)


def test_the_lower_bound_fails_a_candidate_ahead_on_the_point_but_within_the_noise() -> None:
    # point: 0.111 vs 0.10 x 1.05 = 0.105, margin +0.006; resampled margins 0.101 - 0.105 = -0.004 and
    # 0.121 - 0.105 = 0.016, lower bound -0.004 + 0.025 x 0.02 = -0.0035 < 0: not better with confidence
    metrics = {"quality.ndcg_at_10": 0.111, "quality.best_baseline_ndcg_at_10": 0.10}
    draws = {"quality.ndcg_at_10": [0.101, 0.121], "quality.best_baseline_ndcg_at_10": [0.10, 0.10]}
    (result,) = evaluate_check(VS_BASELINE, metrics, draws)
    assert result.status == "fail"
    assert result.margin == pytest.approx(0.006)
    assert result.margin_interval == pytest.approx([-0.0035, 0.0155])
    assert result.gap == pytest.approx(0.0035)
    assert result.shortfall() == "the lower 95% bound of the margin is 0.0035 below 0"
    point = Check(
        name="q",
        metric="quality.ndcg_at_10",
        comparator=">=",
        reference="quality.best_baseline_ndcg_at_10",
        factor=1.05,
    )
    assert evaluate_check(point, metrics, draws)[0].status == "pass"  # the point estimate alone would pass it


def test_the_lower_bound_passes_when_the_paired_difference_is_steady() -> None:
    # the same shoppers lift both: candidate 0.0985 / 0.1205 against baseline 0.09 / 0.11 gives margins
    # 0.0985 - 0.0945 = 0.004 and 0.1205 - 0.1155 = 0.005, lower bound 0.004 + 0.025 x 0.001 = 0.004025 > 0
    metrics = {"quality.ndcg_at_10": 0.1095, "quality.best_baseline_ndcg_at_10": 0.10}
    draws = {"quality.ndcg_at_10": [0.0985, 0.1205], "quality.best_baseline_ndcg_at_10": [0.09, 0.11]}
    (result,) = evaluate_check(VS_BASELINE, metrics, draws)
    assert result.status == "pass"
    assert result.margin_interval == pytest.approx([0.004025, 0.004975])
    assert result.interval == pytest.approx([0.099050, 0.119950])  # the candidate's own interval, shown
    assert "on the lower 95% bound / pass" in result.tag_value


def test_the_upper_bound_lets_a_retrain_through_unless_the_champion_is_better_with_confidence() -> None:
    # champion 0.135 - 0.01 = 0.125 against candidate 0.12: behind on the point (margin -0.005), but resampled
    # margins -0.015 and 0.005 give the upper bound 0.005 - 0.025 x 0.02 = 0.0045 >= 0: not worse with confidence
    metrics = {"quality.ndcg_at_10": 0.12, "champion.ndcg_at_10": 0.135}
    (noisy,) = evaluate_check(
        VS_CHAMPION, metrics, {"quality.ndcg_at_10": [0.11, 0.13], "champion.ndcg_at_10": [0.135, 0.135]}
    )
    assert noisy.status == "pass" and noisy.margin_interval == pytest.approx([-0.0145, 0.0045])
    # champion 0.15: margins -0.03 and -0.01, upper bound -0.01 - 0.025 x 0.02 = -0.0105 < 0: worse with confidence
    (worse,) = evaluate_check(
        VS_CHAMPION,
        {**metrics, "champion.ndcg_at_10": 0.15},
        {"quality.ndcg_at_10": [0.11, 0.13], "champion.ndcg_at_10": [0.15, 0.15]},
    )
    assert worse.status == "fail"
    assert worse.shortfall() == "the upper 95% bound of the margin is 0.0105 below 0"


def test_a_bound_without_resamples_fails_and_says_why() -> None:
    metrics = {"quality.ndcg_at_10": 0.2, "quality.best_baseline_ndcg_at_10": 0.1}
    for draws in (None, {"quality.ndcg_at_10": [0.2, 0.2]}):  # none, or the reference's missing
        (result,) = evaluate_check(VS_BASELINE, metrics, draws)
        assert result.status == "fail"
        assert "needs bootstrap resamples of quality.ndcg_at_10 and quality.best_baseline_ndcg_at_10" in result.message


def test_confidence_sets_the_interval() -> None:
    # confidence 0.5 on margins -0.004 and 0.016: lower bound -0.004 + 0.25 x 0.02 = 0.001 > 0
    check = Check(
        name="q",
        metric="quality.ndcg_at_10",
        comparator=">=",
        reference="quality.best_baseline_ndcg_at_10",
        factor=1.05,
        decide_on="lower",
        confidence=0.5,
    )
    (result,) = evaluate_check(
        check,
        {"quality.ndcg_at_10": 0.111, "quality.best_baseline_ndcg_at_10": 0.10},
        {"quality.ndcg_at_10": [0.101, 0.121], "quality.best_baseline_ndcg_at_10": [0.1, 0.1]},
    )
    assert result.status == "pass" and result.margin_interval == pytest.approx([0.001, 0.011])


# --- fairness: the no-worse-than-alternatives fallback ------------------------------------------------

ACTIVITY = Check(
    name="a",
    metric="fairness.user_ndcg_ratio.activity",
    comparator=">=",
    threshold=0.8,
    fallback="no_worse_than_alternatives",
)
BELOW = {"fairness.user_ndcg_ratio.activity": 0.70, "alternative.best_baseline.fairness.user_ndcg_ratio.activity": 0.72}


def test_below_the_bar_but_no_alternative_fairer_with_confidence_passes_by_the_fallback() -> None:
    # candidate - baseline on two resamples: 0.65 - 0.70 = -0.05 and 0.75 - 0.74 = 0.01; upper bound
    # 0.01 - 0.025 x 0.06 = 0.0085 >= 0: the baseline is not fairer with confidence
    draws = {
        "fairness.user_ndcg_ratio.activity": [0.65, 0.75],
        "alternative.best_baseline.fairness.user_ndcg_ratio.activity": [0.70, 0.74],
    }
    (result,) = evaluate_check(ACTIVITY, BELOW, draws)
    assert (result.status, result.passed, result.rule) == ("pass", True, "no_worse_than_alternatives")
    assert "short by 0.1" in result.message  # the threshold's verdict stays on record
    assert (
        "passed by fallback no_worse_than_alternatives: no alternative is fairer with 95% confidence" in result.message
    )
    assert "candidate - best_baseline [-0.0485, 0.0085]" in result.message
    assert result.tag_value.endswith(" / by no_worse_than_alternatives / pass")
    decision = decide(Policy(name="p", checks=(ACTIVITY,), sha256="0" * 64), BELOW, draws)
    assert decision.passed and "pass by no_worse_than_alternatives" in decision.summary_markdown()


def test_the_fallback_fails_when_an_alternative_is_fairer_with_confidence() -> None:
    # against the champion: 0.65 - 0.80 = -0.15 and 0.75 - 0.85 = -0.10, upper bound -0.10125 < 0
    metrics = {**BELOW, "alternative.champion.fairness.user_ndcg_ratio.activity": 0.82}
    draws = {
        "fairness.user_ndcg_ratio.activity": [0.65, 0.75],
        "alternative.best_baseline.fairness.user_ndcg_ratio.activity": [0.70, 0.74],
        "alternative.champion.fairness.user_ndcg_ratio.activity": [0.80, 0.85],
    }
    (result,) = evaluate_check(ACTIVITY, metrics, draws)
    assert result.status == "fail" and result.rule == "threshold"
    assert "does not apply: champion fairer with 95% confidence" in result.message


def test_the_fallback_needs_the_opt_in_and_an_alternative_with_resamples() -> None:
    draws = {
        "fairness.user_ndcg_ratio.activity": [0.65, 0.75],
        "alternative.best_baseline.fairness.user_ndcg_ratio.activity": [0.70, 0.74],
    }
    plain = Check(name="a", metric="fairness.user_ndcg_ratio.activity", comparator=">=", threshold=0.8)
    assert evaluate_check(plain, BELOW, draws)[0].status == "fail"  # the default: the threshold alone
    (alone,) = evaluate_check(ACTIVITY, {"fairness.user_ndcg_ratio.activity": 0.7}, draws)
    assert alone.status == "fail" and "no alternative carries" in alone.message
    (blind,) = evaluate_check(ACTIVITY, BELOW, None)
    assert blind.status == "fail" and "no bootstrap resamples" in blind.message


def test_a_wildcard_leaves_out_its_exclusions_and_may_skip_when_nothing_is_left() -> None:
    check = Check(
        name="g",
        metric="fairness.user_ndcg_ratio.*",
        comparator=">=",
        threshold=0.8,
        exclude=("activity",),
        skip_if_no_match=True,
    )
    metrics = {"fairness.user_ndcg_ratio.activity": 0.5, "fairness.user_ndcg_ratio.gender": 0.9}
    assert [r.name for r in evaluate_check(check, metrics)] == ["g.gender"]
    (skipped,) = evaluate_check(check, {"fairness.user_ndcg_ratio.activity": 0.5})
    assert skipped.status == "skipped" and "other than activity" in skipped.message


# --- values as they arrive: tags (text), NumPy scalars, NaN ---------------------------------------------


def test_values_read_back_from_tags_compare_as_their_meaning(policy: Policy) -> None:
    # the resamples never travel as tags; judge draws them around the values as read back
    as_text = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in GOOD.items()}
    decision = judge(policy, as_text)
    assert decision.status == "passed", decision.summary_markdown()


def test_numpy_scalars_are_unwrapped(policy: Policy) -> None:
    metrics = {
        **GOOD,
        "quality.ndcg_at_10": np.float32(0.12),
        "privacy.pii_findings": np.int64(0),
        "privacy.dp": np.bool_(True),
    }
    decision = judge(policy, metrics)
    assert decision.status == "passed"
    json.dumps(decision.to_dict())  # plain Python values only


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "the value is NaN"),
        ("high", "'high' is not a number"),
        (True, "'true' is not a number"),
    ],
)
def test_a_value_that_cannot_be_compared_fails(value: object, problem: str) -> None:
    check = Check(name="mia", metric="privacy.mia_auc", comparator="<=", threshold=0.6)
    (result,) = evaluate_check(check, {"privacy.mia_auc": value})
    assert result.status == "fail" and result.passed is False
    assert problem in result.message


def test_a_flag_that_is_not_true_or_false_fails() -> None:
    check = Check(name="dp", metric="privacy.dp", comparator="==", threshold=True)
    (result,) = evaluate_check(check, {"privacy.dp": "maybe"})
    assert result.status == "fail"
    assert "'maybe' is not true/false" in result.message


def test_a_non_numeric_reference_fails() -> None:
    check = Check(name="q", metric="a", comparator=">=", reference="b")
    (result,) = evaluate_check(check, {"a": 1.0, "b": "n/a"})
    assert result.status == "fail"
    assert "reference metric 'b' = 'n/a' is not a number" in result.message


def test_float_noise_in_a_derived_threshold_never_decides() -> None:
    # 0.1 * 1.05 is 0.10500000000000001 in binary floating point; a candidate at 0.105 meets it.
    check = Check(name="q", metric="a", comparator=">=", reference="b", factor=1.05)
    (result,) = evaluate_check(check, {"a": 0.105, "b": 0.1})
    assert result.status == "pass"


@pytest.mark.parametrize(
    ("comparator", "value", "status"),
    [
        ("<", 1.0, "fail"),
        ("<=", 1.0, "pass"),
        (">", 1.0, "fail"),
        (">=", 1.0, "pass"),
        ("==", 1.0, "pass"),
        ("!=", 1.0, "fail"),
        ("<", 0.5, "pass"),
        (">", 1.5, "pass"),
        ("!=", 2.0, "pass"),
    ],
)
def test_every_comparator(comparator: str, value: float, status: str) -> None:
    check = Check(name="c", metric="m", comparator=comparator, threshold=1)
    assert evaluate_check(check, {"m": value})[0].status == status


def test_tag_value_formats_compactly() -> None:
    assert format_value(0.123456) == "0.1235"
    assert format_value(1234567.0) == "1.235e+06"
    assert format_value(8.0) == "8"
    assert format_value(3) == "3"
    assert format_value(False) == "false"
    assert format_value(None) == "missing"
    assert format_value("x" * 500).endswith("...") and len(format_value("x" * 500)) == 200
    result = CheckResult("q", "m", 0.123456, 0.1049999, ">=", True, True, "pass", "")
    assert result.tag_value == "0.1235 / >= 0.105 / pass"


# --- records: dict round trip, markdown -----------------------------------------------------------------


def test_decision_round_trips_through_json(policy: Policy) -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "champion.ndcg_at_10"}
    metrics.update({"drift.share": 0.9, "privacy.epsilon": 9.0})
    decision = judge(policy, metrics)
    again = GateDecision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again == decision
    assert again.to_tags() == decision.to_tags()
    assert again.summary_markdown() == decision.summary_markdown()


def test_from_dict_rejects_what_is_not_a_decision() -> None:
    with pytest.raises(ValueError, match="field 'policy_label' is missing"):
        GateDecision.from_dict({"status": "passed", "checks": []})
    with pytest.raises(ValueError, match="gate status 'maybe'"):
        GateDecision(status="maybe", policy_label="p@0", checks=[])


def test_summary_markdown_is_a_table_with_a_row_per_check(policy: Policy) -> None:
    decision = judge(policy, {**GOOD, "privacy.epsilon": 9.25})
    text = decision.summary_markdown()
    assert text.startswith(f"**Gate failed** (policy `{policy.label}`)")
    assert "| check | value | threshold | margin | decided on | result |" in text
    assert "| privacy_epsilon | 9.25 | <= 8 |  |  | **FAIL**: over by 1.25 |" in text
    assert "| privacy_dp | true | == true |  |  | pass |" in text
    assert (
        "| quality_vs_baseline | 0.12 [0.12, 0.12] | >= 0.105 | 0.015 [0.015, 0.015] | the lower 95% bound | pass |"
    ) in text
    assert "Intervals: 95% paired bootstrap over shoppers" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(decision.checks)


def test_summary_markdown_escapes_pipes() -> None:
    policy = parse_policy(b'name: p\nchecks:\n  - {name: c, metric: m, comparator: "==", threshold: "a"}\n')
    text = judge(policy, {"m": "x|y"}).summary_markdown()
    assert "x\\|y" in text


# --- policy validation ----------------------------------------------------------------------------------

VALID_CHECK = '  - {name: eps, metric: privacy.epsilon, comparator: "<=", threshold: 8}\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'name: p\nchecks:\n  - {name: eps, metric: privacy.epsilon, comparator: "<=", treshold: 8}\n',
            "check #1 'eps': field 'treshold': unknown check key; did you mean 'threshold'?",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: privacy.epsilon, comparator: "=>", threshold: 8}\n',
            "check #1 'eps': field 'comparator': '=>' is not one of <, <=, >, >=, ==, !=",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: privacy.epsilon, comparator: "<="}\n',
            "check #1 'eps': fields 'threshold'/'reference': give exactly one",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: a, comparator: "<=", threshold: 8, reference: b}\n',
            "(got both)",
        ),
        (
            "name: p\nchecks:\n" + VALID_CHECK + VALID_CHECK,
            "check #2 'eps': field 'name': duplicate of check #1",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: privacy.epsilon, comparator: "<=", threshold: 8, blocking: "no"}\n',
            "check #1 'eps': field 'blocking': must be true or false, got 'no'",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: privacy.epsilon, comparator: "<=", threshold: 8, blocking: 1}\n',
            "field 'blocking': must be true or false, got 1",
        ),
        ("name: p\nchecks: []\n", "field 'checks': must be a non-empty list"),
        ("name: p\n", "field 'checks': must be a non-empty list"),
        ("checks:\n" + VALID_CHECK, "field 'name': the policy needs a non-empty name"),
        ("name: p\nrules: []\nchecks:\n" + VALID_CHECK, "field 'rules': unknown top level key"),
        (
            'name: p\nchecks:\n  - {metric: m, comparator: "<=", threshold: 8}\n',
            "check #1: field 'name': is required",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: m, comparator: "<", threshold: high}\n',
            "field 'threshold': comparator '<' needs a number, got 'high'",
        ),
        (
            'name: p\nchecks:\n  - {name: eps, metric: m, comparator: "<", threshold: true}\n',
            "field 'threshold': comparator '<' needs a number, got True",
        ),
        (
            'name: p\nchecks:\n  - {name: status, metric: m, comparator: "<", threshold: 1}\n',
            "field 'name': 'status' is reserved",
        ),
        (
            'name: p\nchecks:\n  - {name: a.b, metric: m, comparator: "<", threshold: 1}\n',
            "field 'name': 'a.b' must be letters, digits",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<", threshold: 1, factor: 2}\n',
            "fields 'factor'/'offset': apply to a reference only",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<", threshold: 1, skip_if_missing_reference: true}\n',
            "field 'skip_if_missing_reference': only makes sense with a 'reference'",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: "fairness.*.ratio", comparator: "<", threshold: 1}\n',
            "'*' is allowed only as a final '.*'",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<", reference: "r.*"}\n',
            "field 'reference': 'r.*' may not be a wildcard",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<", reference: r, offset: x}\n',
            "field 'offset': must be a finite number, got 'x'",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: ">=", threshold: 1, decide_on: middle}\n',
            "field 'decide_on': 'middle' is not one of point, lower, upper",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: ">=", threshold: 1, confidence: 95}\n',
            "field 'confidence': must be a number between 0 and 1 (exclusive), got 95",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "==", threshold: true, decide_on: lower}\n',
            "field 'decide_on': 'lower' needs a numeric comparison",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: ">=", threshold: 1, fallback: kinder}\n',
            "field 'fallback': 'kinder' is not one of none, no_worse_than_alternatives",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<=", threshold: 1, '
            "fallback: no_worse_than_alternatives}\n",
            "field 'fallback': no_worse_than_alternatives needs '>=' or '>'",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: ">=", threshold: 1, exclude: [x]}\n',
            "field 'exclude': only makes sense with a wildcard",
        ),
        (
            'name: p\nchecks:\n  - {name: a, metric: m, comparator: "<", threshold: .nan}\n',
            "field 'threshold': must be finite",
        ),
        (
            "name: p\nchecks:\n  - name: a\n    metric: m\n    comparator: >=\n    threshold: 1\n",
            "not valid YAML",
        ),
        ("- just\n- a list\n", "expected a mapping with 'name' and 'checks'"),
        ("name: p\nchecks:\n  - eps\n", "check #1: must be a mapping of fields"),
    ],
)
def test_policy_validation_errors_name_file_check_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    body = (
        "name: p\nchecks:\n"
        '  - {name: a, metric: m, comparator: "=>", threshold: 1}\n'
        '  - {name: b, metric: m, comparator: "<"}\n'
        '  - {name: c, metric: m, comparator: "<", threshold: 1, blockng: false}\n'
    )
    with pytest.raises(PolicyError) as error:
        load_policy(write(tmp_path, body))
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "check #1 'a'" in message and "check #2 'b'" in message and "check #3 'c'" in message
    assert "did you mean 'blocking'?" in message


def test_a_missing_policy_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found; pass an existing YAML file"):
        load_policy(tmp_path / "nope.yaml")


def test_thresholds_are_normalised(tmp_path: Path) -> None:
    body = (
        "name: p\nchecks:\n"
        '  - {name: a, metric: m, comparator: "<", threshold: 1e-5}\n'  # YAML 1.1 reads this as text
        '  - {name: b, metric: m, comparator: "==", threshold: 0}\n'
        '  - {name: c, metric: m, comparator: "!=", threshold: user}\n'
    )
    a, b, c = load_policy(write(tmp_path, body)).checks
    assert a.threshold == pytest.approx(1e-5) and isinstance(a.threshold, float)
    assert b.threshold == 0.0 and isinstance(b.threshold, float)
    assert c.threshold == "user"


def test_a_check_built_in_code_is_validated_too() -> None:
    with pytest.raises(PolicyError, match="check 'x': field 'comparator'"):
        Check(name="x", metric="m", comparator="=<", threshold=1.0)
    with pytest.raises(PolicyError, match="give exactly one"):
        Check(name="x", metric="m", comparator="<")


def test_policy_hash_changes_when_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nchecks:\n" + VALID_CHECK)
    first = load_policy(path)
    assert load_policy(path).sha256 == first.sha256  # same bytes, same hash
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text("name: p\nchecks:\n" + VALID_CHECK.replace("8", "6"))
    second = load_policy(path)
    assert second.sha256 != first.sha256 and second.label != first.label
    path.write_text("# a comment is a change too\nname: p\nchecks:\n" + VALID_CHECK)
    assert load_policy(path).sha256 not in (first.sha256, second.sha256)
    assert first.label == f"p@{first.sha256[:12]}"


def test_a_copy_of_the_default_policy_loads_to_the_same_checks(tmp_path: Path, policy: Policy) -> None:
    data = resources.files("ml.gate").joinpath("default_policy.yaml").read_bytes()
    path = tmp_path / "copy.yaml"
    path.write_bytes(data)
    assert load_policy(path) == policy
    edited = data.replace(b"threshold: 8\n", b"threshold: 6\n")
    assert edited != data
    stricter = load_policy(write(tmp_path, edited.decode(), "stricter.yaml"))
    assert stricter.label != policy.label
    assert judge(stricter, GOOD).blocking_failures == ["privacy_epsilon"]


def test_the_default_policy_skips_an_unmeasurable_activity_split_but_not_a_missing_protected_ratio(policy):
    reasons = {"unmeasurable.fairness.user_ndcg_ratio.activity": "fewer than two groups (light 860)"}
    by_name = {
        r.name: r
        for c in policy.checks
        if c.metric.startswith("fairness.user_ndcg_ratio")
        for r in evaluate_check(
            c, {"fairness.user_ndcg_ratio.activity": None, "fairness.user_ndcg_ratio.gender": 0.9, **reasons}
        )
    }
    assert by_name["fairness_user_activity"].status == "skipped"
    assert by_name["fairness_user_groups.gender"].status == "pass"
    missing = [
        r
        for c in policy.checks
        if c.name == "fairness_user_groups"
        for r in evaluate_check(c, {"fairness.user_ndcg_ratio.gender": None})
    ]
    assert [r.status for r in missing] == ["fail"]


def test_provider_exposure_without_a_long_tail_target_is_skipped_only_with_its_reason(policy):
    (check,) = [c for c in policy.checks if c.name == "fairness_provider"]
    reason = {"unmeasurable.fairness.provider_exposure_ratio": "no hold-out target is an item of a long-tail brand"}
    (skipped,) = evaluate_check(check, {"fairness.provider_exposure_ratio": None, **reason})
    assert skipped.status == "skipped" and "long-tail brand" in skipped.message
    (failed,) = evaluate_check(check, {"fairness.provider_exposure_ratio": None})
    assert failed.status == "fail"
