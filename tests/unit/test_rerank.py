"""Exposure-constrained re-ranking: identity at share 0, prefix minimums, graceful shortage, trade-off."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.evaluation.rerank import RerankConfig, required_tail, rerank, tradeoff

ITEMS = ["h1", "h2", "h3", "h4", "t1", "h5", "t2", "h6", "t3", "t4"]
SCORES = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
IS_TAIL = {item: item.startswith("t") for item in ITEMS}


def test_share_zero_is_identity() -> None:
    assert rerank(ITEMS, SCORES, IS_TAIL, 10, RerankConfig()) == ITEMS
    assert rerank(ITEMS, SCORES, IS_TAIL, 4, RerankConfig(0.0)) == ITEMS[:4]


def test_unsorted_input_is_ranked_by_score_ties_by_input_order() -> None:
    assert rerank(["b", "a", "c"], [1.0, 2.0, 1.0], {}, 3, RerankConfig()) == ["a", "b", "c"]


def test_half_share_hand_worked() -> None:
    # need floor(0.5 * p) tail items by position p: 0, 1, 1, 2, 2, 3, ...
    out = rerank(ITEMS, SCORES, IS_TAIL, 6, RerankConfig(min_tail_share=0.5))
    assert out == ["h1", "t1", "h2", "t2", "h3", "t3"]


def test_half_share_meets_every_prefix_when_tail_is_available() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        items = [f"i{j}" for j in range(30)]
        scores = rng.normal(size=30).tolist()
        is_tail = {item: bool(rng.random() < 0.4) for item in items}
        k = 10
        out = rerank(items, scores, is_tail, k, RerankConfig(min_tail_share=0.5))
        n_tail = sum(is_tail.values())
        assert len(out) == k and len(set(out)) == k
        for i in range(1, k + 1):
            got = sum(is_tail[x] for x in out[:i])
            assert got >= min(math.floor(0.5 * i), n_tail), (i, out)


def test_fewer_tail_candidates_than_needed_degrades_gracefully() -> None:
    items = ["h1", "h2", "t1", "h3", "h4"]
    out = rerank(items, [5.0, 4.0, 3.0, 2.0, 1.0], {"t1": True}, 4, RerankConfig(min_tail_share=1.0))
    assert out == ["t1", "h1", "h2", "h3"]  # the one tail item first, then by score
    assert rerank(["h1", "h2"], [2.0, 1.0], {}, 5, RerankConfig(min_tail_share=0.5)) == ["h1", "h2"]


def test_window_restarts_the_count() -> None:
    items = [f"h{j}" for j in range(6)] + ["t1", "t2"]
    scores = [float(-j) for j in range(8)]
    is_tail = {"t1": True, "t2": True}
    # window 3, share 1/3: one tail by position 3 and one more by position 6 (FA*IR over pages)
    out = rerank(items, scores, is_tail, 6, RerankConfig(min_tail_share=1 / 3, window=3))
    assert out == ["h0", "h1", "t1", "h2", "h3", "t2"]


def test_floor_rule_is_robust_to_rounding() -> None:
    assert required_tail(100, 0.29) == 29  # 0.29 * 100 = 28.999999999999996 in floating point
    assert required_tail(1, 0.1) == 0  # a small share never takes over the top slot
    assert required_tail(10, 0.1) == 1
    assert required_tail(5, 0.0) == 0


def test_config_and_input_validation() -> None:
    with pytest.raises(ValueError, match="min_tail_share"):
        RerankConfig(min_tail_share=1.5)
    with pytest.raises(ValueError, match="window"):
        RerankConfig(window=0)
    with pytest.raises(ValueError, match="duplicates"):
        rerank(["a", "a"], [1.0, 2.0], {}, 2, RerankConfig())
    with pytest.raises(ValueError, match="one score per item"):
        rerank(["a", "b"], [1.0], {}, 2, RerankConfig())


def test_tradeoff_rows_hand_worked() -> None:
    # one case, k = 2, candidates h1 > h2 > t1, target t1 (tail)
    # share 0: [h1, h2] -> ndcg 0, tail exposure 0
    # share 0.5: [h1, t1] -> ndcg 1 / log2(3) = 0.630930, tail exposure 0.630930 / 1.630930 = 0.386853
    frame = tradeoff([["h1", "h2", "t1"]], ["t1"], {"t1": True}, k=2, shares=[0.0, 0.5])
    assert list(frame.columns) == [
        "min_tail_share",
        "ndcg",
        "recall",
        "ndcg_loss",
        "tail_exposure_share",
        "tail_relevance_share",
        "provider_exposure_ratio",
    ]
    assert frame["min_tail_share"].tolist() == [0.0, 0.5]
    gain = 1 / math.log2(3)
    assert frame["ndcg"].tolist() == pytest.approx([0.0, gain])
    assert frame["ndcg_loss"].tolist() == pytest.approx([0.0, -gain])
    share = gain / (1 + gain)
    assert frame["tail_exposure_share"].tolist() == pytest.approx([0.0, share])
    assert frame["provider_exposure_ratio"].tolist() == pytest.approx([0.0, share])


def test_tradeoff_more_tail_costs_ndcg_when_targets_are_head() -> None:
    rng = np.random.default_rng(2)
    candidates, targets, is_tail = [], [], {}
    for c in range(60):
        items = [f"c{c}_{j}" for j in range(20)]
        for j, item in enumerate(items):
            is_tail[item] = j >= 10  # the model ranks tail items low
        candidates.append(items)
        targets.append(items[int(rng.integers(0, 3))])  # relevant items are head and ranked high
    frame = tradeoff(candidates, targets, is_tail, k=10, shares=[0.0, 0.3, 0.6])
    assert frame["tail_exposure_share"].is_monotonic_increasing
    assert frame["ndcg"].is_monotonic_decreasing
    assert frame["ndcg"].iloc[2] < frame["ndcg"].iloc[0]
    assert frame["provider_exposure_ratio"].isna().all()  # no relevant tail item
