"""The paired bootstrap over shoppers, on tiny hand-worked cases whose resample distribution is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.evaluation.bootstrap import (
    group_ratio_draws,
    hold_out,
    interval,
    ratio_draws,
    shopper_resamples,
    summary,
)
from ml.evaluation.evaluate import gate_evidence, paired_draws


def test_a_resample_draws_shoppers_with_replacement_exactly_as_seeded() -> None:
    # shoppers "a" (value 1) and "b" (value 0): each resample draws two shoppers, so its mean is 0, 0.5 or 1
    resamples = shopper_resamples(["a", "b"], n_resamples=50, seed=3)
    rng = np.random.default_rng(3)
    expected = [np.array([1.0, 0.0])[rng.integers(0, 2, size=2)].mean() for _ in range(50)]
    assert resamples.means([1.0, 0.0]).tolist() == expected
    assert set(expected) <= {0.0, 0.5, 1.0}


def test_a_shoppers_cases_stay_together() -> None:
    # "a" has two cases (1, 1), "b" one (0): a resample holds a's cases twice, or both shoppers, or b twice:
    # means 1, 2/3 or 0, never the 1/2 that resampling cases independently would also give
    resamples = shopper_resamples(["a", "a", "b"], n_resamples=400, seed=0)
    means = resamples.means([1.0, 1.0, 0.0])
    assert set(np.round(means, 12)) == {0.0, round(2 / 3, 12), 1.0}


def test_the_draws_depend_on_the_shoppers_and_seed_not_on_case_order() -> None:
    values = np.array([0.2, 0.9, 0.4, 0.0])
    forward = shopper_resamples(["u1", "u2", "u3", "u1"], n_resamples=30, seed=5).means(values)
    order = [3, 2, 1, 0]
    backward = shopper_resamples(["u1", "u3", "u2", "u1"], n_resamples=30, seed=5).means(values[order])
    np.testing.assert_allclose(forward, backward)
    other_seed = shopper_resamples(["u1", "u2", "u3", "u1"], n_resamples=30, seed=6).means(values)
    assert not np.allclose(forward, other_seed)


def test_the_hold_out_is_the_point_estimate() -> None:
    resamples = shopper_resamples(["a", "a", "b"], n_resamples=10, seed=0)
    assert hold_out(resamples).means([1.0, 1.0, 0.0]).tolist() == [pytest.approx(2 / 3)]


def test_paired_differences_cancel_what_both_rankers_share() -> None:
    # the baseline is the candidate less 0.1 on every case: each side's interval is wide, the paired one is a point
    rng = np.random.default_rng(0)
    shoppers = [f"u{i}" for i in range(40)]
    candidate = rng.uniform(0.2, 1.0, size=40)
    resamples = shopper_resamples(shoppers, n_resamples=200, seed=1)
    a, b = resamples.means(candidate), resamples.means(candidate - 0.1)
    low, high = interval(a, 0.95)
    assert high - low > 0.1
    diff_low, diff_high = interval(a - b, 0.95)
    assert diff_low == pytest.approx(0.1) and diff_high == pytest.approx(0.1)


def test_interval_is_the_percentile_interval() -> None:
    # 0..100: the 2.5% and 97.5% quantiles (linear interpolation) are 2.5 and 97.5
    assert interval(np.arange(101.0), 0.95) == pytest.approx((2.5, 97.5))
    assert interval([0.0, 1.0], 0.5) == (0.25, 0.75)
    assert interval([np.nan, 3.0, 3.0], 0.95) == (3.0, 3.0)  # undefined resamples left out
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        interval([1.0], 1.0)
    assert summary(0.5, np.array([0.0, 1.0]), 0.5) == {"value": 0.5, "lower": 0.25, "upper": 0.75, "confidence": 0.5}


def test_a_group_ratio_is_min_over_max_per_resample() -> None:
    # "a" in group x (NDCG 1), "b" in group y (0.5): a resample with both gives 0.5; with one group missing, NaN
    resamples = shopper_resamples(["a", "b"], n_resamples=200, seed=2)
    draws = group_ratio_draws([1.0, 0.5], ["x", "y"], ["x", "y"], resamples)
    both = resamples.counts.min(axis=1) > 0
    assert np.all(draws[both] == 0.5) and np.all(np.isnan(draws[~both]))
    assert group_ratio_draws([1.0, 0.5], ["x", "y"], ["x", "y"], hold_out(resamples)).tolist() == [0.5]
    assert np.isnan(group_ratio_draws([1.0, 0.5], ["x", "y"], ["x"], resamples)).all()  # one group: no ratio
    assert np.isnan(ratio_draws(np.array([1.0]), np.array([0.0]))).all()


def test_gate_evidence_pairs_every_ranker_on_the_same_resamples() -> None:
    shoppers = ["a", "a", "b", "c"]
    groups = pd.DataFrame({"activity": ["heavy", "heavy", "light", "light"]})
    ndcg = {
        "candidate": np.array([1.0, 0.5, 0.5, 0.0]),
        "bm25": np.array([0.5, 0.5, 0.5, 0.0]),
        "popularity": np.array([1.0, 1.0, 0.5, 0.5]),
        "champion": np.array([1.0, 0.5, 0.0, 0.0]),
    }
    resamples = shopper_resamples(shoppers, n_resamples=100, seed=0)
    points, draws = gate_evidence(
        ndcg, groups, {"activity": ["heavy", "light"]}, resamples, best="bm25", best_non_private="popularity"
    )
    assert points["quality.ndcg_at_10"] == pytest.approx(0.5)
    assert points["quality.best_baseline_ndcg_at_10"] == pytest.approx(0.375)
    assert points["quality.price_of_privacy"] == pytest.approx(0.5 / 0.75)
    assert points["champion.ndcg_at_10"] == pytest.approx(0.375)
    # candidate: heavy 0.75, light 0.25 -> 1/3; bm25: heavy 0.5, light 0.25 -> 1/2; champion: 0.75 vs 0 -> 0
    assert points["fairness.user_ndcg_ratio.activity"] == pytest.approx(1 / 3)
    assert points["alternative.best_baseline.fairness.user_ndcg_ratio.activity"] == pytest.approx(0.5)
    assert points["alternative.champion.fairness.user_ndcg_ratio.activity"] == pytest.approx(0.0)
    raw = paired_draws(ndcg, groups, {"activity": ["heavy", "light"]}, resamples)
    np.testing.assert_array_equal(draws["quality.best_baseline_ndcg_at_10"], raw["bm25.ndcg"])
    np.testing.assert_array_equal(draws["quality.price_of_privacy"], raw["candidate.ndcg"] / raw["popularity.ndcg"])
    assert set(points) == set(draws)
