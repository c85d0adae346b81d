"""Judged-query metrics, the re-ranking orders and the paired intervals, on cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.evaluation.judged import fused_within, order_within, paired_summary, query_metrics


def test_query_metrics_hand_worked():
    grades = {"a": 4, "b": 1, "c": 3, "d": 2}  # gains 7, 0, 3, 1; relevant (grade >= 3): a and c
    got = query_metrics(["b", "a", "x", "c"], grades, k=3)  # x was not judged: no gain, not relevant
    dcg = 0 / math.log2(2) + 7 / math.log2(3) + 0 / math.log2(4)
    ideal = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg"] == pytest.approx(dcg / ideal, rel=1e-12)
    assert got["rr"] == pytest.approx(1 / 2)
    assert got["recall"] == pytest.approx(1 / 2)  # c is at rank 4, past k
    perfect = query_metrics(["a", "c", "d", "b"], grades, k=4)
    assert perfect == {"ndcg": pytest.approx(1.0), "rr": 1.0, "recall": 1.0}
    # a product listed twice counts once (the list is cut after removing repeats)
    assert query_metrics(["b", "b", "a"], grades, k=2)["rr"] == pytest.approx(1 / 2)


def test_query_metrics_without_relevant_or_gaining_products_measure_nothing():
    only_partial = query_metrics(["d"], {"d": 2, "b": 1}, k=10)
    assert only_partial["ndcg"] == pytest.approx(1.0)
    assert math.isnan(only_partial["rr"]) and math.isnan(only_partial["recall"])
    assert math.isnan(query_metrics(["b"], {"b": 1}, k=10)["ndcg"])
    with pytest.raises(ValueError, match="k must be"):
        query_metrics(["a"], {"a": 4}, k=0)


def test_order_within_sorts_the_given_rows_and_breaks_ties_by_lower_row():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.7])
    assert order_within(scores, [4, 3, 1, 0]).tolist() == [1, 3, 4, 0]
    assert order_within(scores, []).size == 0


def test_fused_within_is_the_served_fusion_restricted_to_the_judged_rows():
    dense = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    lexical = np.array([0.0, 0.0, 2.0, 1.0, 5.0])  # rows 0 and 1 match no query word: not on the lexical side
    # judged rows 1..4: dense order 1, 2, 3, 4; lexical order 4, 2, 3
    # fused: 1 -> 1/61 (.01639); 2 -> 1/62 + 1/62 (.03226); 3 -> 1/63 + 1/63 (.03175); 4 -> 1/64 + 1/61 (.03202)
    got = fused_within(dense, lexical, [1, 2, 3, 4], lexical_weight=1.0, depth=10)
    assert got.tolist() == [2, 4, 3, 1]
    # lexical side off: the dense order
    assert fused_within(dense, lexical, [1, 2, 3, 4], 0.0, 10).tolist() == [1, 2, 3, 4]
    # depth 1: only each side's first is fused, the rest follow in dense order
    assert fused_within(dense, lexical, [1, 2, 3, 4], 1.0, 1).tolist() == [1, 4, 2, 3]


def test_paired_summary_points_differences_and_left_out_units():
    values = {"served": [1.0, 0.5, 0.0, math.nan], "bm25": [0.5, 0.5, 0.5, 0.2]}
    got = paired_summary(values, ["q1", "q2", "q3", "q4"], seed=0, reference="served", n_resamples=200)
    assert got["n_units"] == 3 and got["n_left_out"] == 1  # q4 has no value for served: left out of both
    assert got["mean"]["served"]["value"] == pytest.approx(0.5)
    assert got["mean"]["bm25"]["value"] == pytest.approx(0.5)
    assert got["difference"]["bm25"]["value"] == pytest.approx(0.0)
    assert got["ratio"]["bm25"]["value"] == pytest.approx(1.0)
    low, high = got["difference"]["bm25"]["lower"], got["difference"]["bm25"]["upper"]
    assert low < 0 < high  # three queries, one better, one worse: the interval straddles 0
    same = paired_summary({"a": [0.2, 0.4, 0.9], "b": [0.1, 0.3, 0.8]}, ["x", "y", "z"], 0, "a", 200)
    # a constant paired gap has no spread, however much the two means move between resamples
    assert same["difference"]["b"]["lower"] == pytest.approx(0.1) == same["difference"]["b"]["upper"]
    with pytest.raises(ValueError, match="nothing to compare"):
        paired_summary({"a": [math.nan]}, ["x"], 0, "a")
