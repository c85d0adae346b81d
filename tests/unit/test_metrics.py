"""Ranking and beyond-accuracy metrics on hand-worked cases (log2(3) = 1.58496, log2(5) = 2.32193)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.evaluation.metrics import (
    beyond_accuracy,
    gini,
    per_case_metrics,
    personalization,
    ranking_metrics,
)

TOL = 1e-6

# case 0: the single target "c" at rank 3
# case 1: targets {a, b, z}; a at rank 2, b at rank 4, z absent
# case 2: target "q" not recommended at all
# case 3: target "e" at rank 5, just outside k = 4
RECS = [["a", "b", "c", "d"], ["x", "a", "y", "b"], ["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]]
TARGETS = ["c", {"a", "b", "z"}, "q", "e"]
K = 4


def test_per_case_single_target_at_rank_3() -> None:
    row = per_case_metrics(RECS, TARGETS, K).iloc[0]
    assert row["ndcg"] == pytest.approx(1 / math.log2(4), rel=TOL)  # 0.5
    assert row["recall"] == 1.0
    assert row["hit"] == 1.0
    assert row["rr"] == pytest.approx(1 / 3, rel=TOL)
    assert row["ap"] == pytest.approx(1 / 3, rel=TOL)  # precision@3 = 1/3, one relevant


def test_per_case_several_targets() -> None:
    row = per_case_metrics(RECS, TARGETS, K).iloc[1]
    # DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606
    # IDCG over min(k, 3) = 3 slots = 1 + 0.630930 + 0.5 = 2.130930
    assert row["ndcg"] == pytest.approx(1.061606 / 2.130930, rel=TOL)  # 0.498189
    assert row["ndcg"] == pytest.approx(0.498189, abs=1e-6)
    assert row["recall"] == pytest.approx(2 / 3, rel=TOL)
    assert row["hit"] == 1.0
    assert row["rr"] == pytest.approx(0.5, rel=TOL)
    # AP = (precision@2 + precision@4) / min(k, 3) = (1/2 + 2/4) / 3
    assert row["ap"] == pytest.approx(1 / 3, rel=TOL)


def test_per_case_misses_and_cutoff() -> None:
    frame = per_case_metrics(RECS, TARGETS, K)
    for i in (2, 3):  # not recommended / recommended at rank k + 1
        assert frame.iloc[i].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert list(frame.columns) == ["ndcg", "recall", "hit", "rr", "ap"]
    assert per_case_metrics(RECS, TARGETS, 5).iloc[3]["rr"] == pytest.approx(0.2)


def test_ranking_metrics_are_means_with_house_names() -> None:
    result = ranking_metrics(RECS, TARGETS, K)
    assert set(result) == {"ndcg_at_4", "recall_at_4", "hr_at_4", "mrr", "map_at_4"}
    assert result["ndcg_at_4"] == pytest.approx((0.5 + 0.498189) / 4, abs=1e-6)
    assert result["recall_at_4"] == pytest.approx((1 + 2 / 3) / 4, rel=TOL)
    assert result["hr_at_4"] == pytest.approx(0.5)
    assert result["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 4, rel=TOL)
    assert result["map_at_4"] == pytest.approx((1 / 3 + 1 / 3) / 4, rel=TOL)


def test_ideal_dcg_caps_at_k() -> None:
    # 3 relevant items, k = 2, both slots relevant: perfect NDCG and AP though recall is 2/3
    row = per_case_metrics([["a", "b", "c"]], [{"a", "b", "c"}], 2).iloc[0]
    assert row["ndcg"] == pytest.approx(1.0)
    assert row["ap"] == pytest.approx(1.0)
    assert row["recall"] == pytest.approx(2 / 3)


def test_repeated_item_counts_once() -> None:
    row = per_case_metrics([["a", "a", "b"]], [{"a", "b"}], 2).iloc[0]
    assert row["recall"] == 1.0  # top 2 distinct = a, b
    assert row["ndcg"] == pytest.approx(1.0)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="targets has 1"):
        per_case_metrics([["a"], ["b"]], ["a"], 1)
    with pytest.raises(ValueError, match="case 1: a case has no relevant item"):
        per_case_metrics([["a"], ["b"]], ["a", set()], 1)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ranking_metrics([["a"]], ["a"], 0)


# --------------------------------------------------------------------------------------- beyond accuracy

# u1 {a, b}, u2 {a, c}, u3 {a, b}; catalog a..e; counts a=6, b=1, d=1 (c never seen), total 8
BA_RECS = [["a", "b", "z"], ["a", "c", "z"], ["a", "b", "z"]]
POPULARITY = {"a": 6.0, "b": 1.0, "d": 1.0}
VECTORS = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}


def test_beyond_accuracy_hand_worked() -> None:
    out = beyond_accuracy(BA_RECS, k=2, n_catalog=5, item_popularity=POPULARITY, item_vectors=VECTORS)
    assert out["coverage"] == pytest.approx(3 / 5)
    # cosines: u1-u2 = 1/2, u1-u3 = 1, u2-u3 = 1/2 -> mean 2/3
    assert out["personalization"] == pytest.approx(1 - 2 / 3)
    # lists: 1 - cos(a,b) = 1; 1 - cos(a,c) = 1 - 1/sqrt(2) = 0.292893; 1
    assert out["intra_list_diversity"] == pytest.approx((2 + 0.292893) / 3, abs=1e-6)
    # slots a,b,a,c,a,b: -log2(6/8) = 0.415037 (x3), -log2(1/8) = 3 (b x2, c unseen -> count 1)
    assert out["novelty"] == pytest.approx((3 * 0.415037 + 3 * 3) / 6, abs=1e-6)
    assert out["avg_rec_popularity"] == pytest.approx((6 + 1 + 6 + 0 + 6 + 1) / 6)
    # exposure counts over the catalog [0, 0, 1, 2, 3]: sum (2i - n - 1) x_i = 0 + 2*2 + 4*3 = 16; / (5 * 6)
    assert out["gini_exposure"] == pytest.approx(16 / 30)


def test_beyond_accuracy_without_vectors() -> None:
    out = beyond_accuracy(BA_RECS, k=2, n_catalog=5, item_popularity=POPULARITY)
    assert out["intra_list_diversity"] is None


def test_catalog_smaller_than_recommended_items_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_catalog=2"):
        beyond_accuracy(BA_RECS, k=2, n_catalog=2, item_popularity=POPULARITY)


def test_gini_extremes() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 8]) == pytest.approx(3 / 4)  # (n - 1) / n
    assert gini([0, 0]) == 0.0


def test_personalization_identical_and_disjoint_lists() -> None:
    assert personalization([["a", "b"], ["b", "a"], ["a", "b"]]) == pytest.approx(0.0)
    assert personalization([["a", "b"], ["c", "d"], ["e", "f"]]) == pytest.approx(1.0)
    assert personalization([["a"]]) is None


def test_personalization_samples_large_inputs_reproducibly() -> None:
    rng = np.random.default_rng(3)
    tops = [[f"i{j}" for j in rng.choice(200, size=5, replace=False)] for _ in range(2500)]
    first = personalization(tops)
    assert first == personalization(tops)  # fixed seed
    assert first == pytest.approx(1 - 5 / 200, abs=0.01)  # random lists overlap by k/n on average


# ------------------------------------------------------------------------------------ against Evidently


def test_ranking_metrics_match_evidently(tmp_path) -> None:
    """Evidently 0.7.23's RecsysPreset agrees with ours for single-target cases (its MAP divides by the
    number of relevant items, ours by min(k, n_relevant): the same when there is one target)."""
    pytest.importorskip("evidently")
    from ml.evaluation.reports import ranking_frame, ranking_report

    rng = np.random.default_rng(11)
    k = 5
    recs = [[f"i{j}" for j in rng.choice(30, size=8, replace=False)] for _ in range(40)]
    targets = [r[int(rng.integers(0, 8))] if rng.random() < 0.7 else "i99" for r in recs]
    ours = ranking_metrics(recs, targets, k)
    theirs = ranking_report(ranking_frame(recs, targets, k), tmp_path / "r.html", k)["metrics"]
    assert ours["ndcg_at_5"] > 0.05  # the comparison is not between zeros
    for name in ("ndcg_at_5", "recall_at_5", "hr_at_5", "mrr", "map_at_5"):
        assert theirs[name] == pytest.approx(ours[name], abs=1e-9), name
    # with full top-k lists Evidently's co-occurrence formula equals 1 - mean pairwise cosine
    beyond = beyond_accuracy(recs, k, n_catalog=100, item_popularity={"i0": 1.0})
    assert theirs["personalization"] == pytest.approx(beyond["personalization"], abs=1e-9)
