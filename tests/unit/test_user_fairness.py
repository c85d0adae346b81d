"""User-side fairness mitigation: identity at strength 0, only the chosen group moves, hand-worked blends,
the trade-off table and the choice of strength."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation.rerank import RerankConfig
from ml.evaluation.user_fairness import (
    UserFairnessConfig,
    blend,
    bootstrap_ratios,
    choose_strength,
    mitigate,
    mitigated,
    mitigated_scores,
    shopper_resamples,
    standardize,
    tradeoff,
    unseen,
    worse_served,
)

POOL = ["a", "b", "c", "d"]
MODEL = [4.0, 3.0, 2.0, 1.0]
SUPPORT = [1.0, 2.0, 3.0, 4.0]  # the reverse order


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="strength"):
        UserFairnessConfig(strength=1.5)
    with pytest.raises(ValueError, match="group"):
        UserFairnessConfig(group="medium")
    with pytest.raises(ValueError, match="threshold"):
        UserFairnessConfig(threshold=-1)


def test_mitigated_group_follows_activity_groups_or_threshold() -> None:
    lengths = [1, 5, 3, 3, 10]  # median 3: light, heavy, light, light, heavy
    assert mitigated(lengths, UserFairnessConfig(group="heavy")).tolist() == [False, True, False, False, True]
    assert mitigated(lengths, UserFairnessConfig(group="light")).tolist() == [True, False, True, True, False]
    assert mitigated(lengths, UserFairnessConfig(group="heavy", threshold=4)).tolist() == [
        False,
        True,
        False,
        False,
        True,
    ]
    assert mitigated(lengths, UserFairnessConfig(group="heavy", threshold=1)).tolist() == [
        False,
        True,
        True,
        True,
        True,
    ]


def test_standardize_hand_worked_and_constant() -> None:
    # mean 2.5, population deviation sqrt(1.25)
    assert standardize(MODEL) == pytest.approx([1.5 / 1.25**0.5, 0.5 / 1.25**0.5, -0.5 / 1.25**0.5, -1.5 / 1.25**0.5])
    assert standardize([3.0, 3.0, 3.0]).tolist() == [0.0, 0.0, 0.0]
    assert standardize([]).size == 0


def test_blend_ends_and_middle() -> None:
    assert blend(MODEL, SUPPORT, 0.0) == pytest.approx(standardize(MODEL))
    assert blend(MODEL, SUPPORT, 1.0) == pytest.approx(standardize(SUPPORT))
    assert blend(MODEL, SUPPORT, 0.5) == pytest.approx([0.0] * 4)  # exact opposites cancel
    # scale of either signal does not matter: z removes it
    assert blend([x * 100 for x in MODEL], SUPPORT, 0.3) == pytest.approx(blend(MODEL, SUPPORT, 0.3))
    with pytest.raises(ValueError, match="one support score per candidate"):
        blend(MODEL, SUPPORT[:3], 0.5)


def test_strength_zero_is_the_model_ranking() -> None:
    rng = np.random.default_rng(3)
    pools = [[f"i{j}" for j in rng.permutation(20)] for _ in range(30)]
    model = [rng.normal(size=20).tolist() for _ in pools]
    support = [rng.normal(size=20).tolist() for _ in pools]
    lengths = rng.integers(1, 11, size=30).tolist()
    out = mitigate(pools, model, support, lengths, UserFairnessConfig(strength=0.0), 10)
    expected = [
        [p[j] for j in np.argsort(-np.asarray(m), kind="stable")[:10]] for p, m in zip(pools, model, strict=True)
    ]
    assert out == expected


def test_only_the_mitigated_group_is_reranked() -> None:
    pools = [POOL, POOL, POOL]
    lengths = [1, 2, 9]  # median 2: light, light, heavy
    out = mitigate(pools, [MODEL] * 3, [SUPPORT] * 3, lengths, UserFairnessConfig(strength=0.8), 3)
    assert out[0] == out[1] == ["a", "b", "c"]  # light: the model's order
    assert out[2] == ["d", "c", "b"]  # heavy: 0.2 z(model) + 0.8 z(support) follows the support
    out = mitigate(pools, [MODEL] * 3, [SUPPORT] * 3, lengths, UserFairnessConfig(strength=0.8, group="light"), 3)
    assert out[0] == out[1] == ["d", "c", "b"] and out[2] == ["a", "b", "c"]


def test_hand_worked_blend_moves_one_item() -> None:
    # z(model) = [1.342, 0.447, -0.447, -1.342]; support only lifts "c": z = [-0.577, -0.577, 1.732, -0.577]
    # at 0.3: a 0.766, b 0.140, c 0.207, d -1.112 -> a, c, b, d
    support = [0.0, 0.0, 1.0, 0.0]
    out = mitigate([POOL], [MODEL], [support], [5], UserFairnessConfig(strength=0.3, threshold=1), 4)
    assert out == [["a", "c", "b", "d"]]
    # at 0.1 c stays behind b: b 0.345, c -0.229
    out = mitigate([POOL], [MODEL], [support], [5], UserFairnessConfig(strength=0.1, threshold=1), 4)
    assert out == [["a", "b", "c", "d"]]


def test_mitigate_checks_lengths() -> None:
    with pytest.raises(ValueError, match="support_scores has 1 entries but pools has 2"):
        mitigate([POOL, POOL], [MODEL, MODEL], [SUPPORT], [1, 2], UserFairnessConfig(), 2)
    with pytest.raises(ValueError, match="shopper 0: 4 candidates but 3 model scores"):
        mitigate([POOL], [MODEL[:3]], [SUPPORT], [1], UserFairnessConfig(), 2)
    with pytest.raises(ValueError, match="k must be"):
        mitigate([POOL], [MODEL], [SUPPORT], [1], UserFairnessConfig(), 0)


def _direction_case() -> tuple[list[list[str]], list[list[float]], list[list[float]], list[int], list[str]]:
    """40 light shoppers whose target the model ranks first; 40 heavy ones whose target it ranks 4th of 4 but the
    support ranks first."""
    pools, model, support, lengths, targets = [], [], [], [], []
    for i in range(80):
        heavy = i >= 40
        pools.append(POOL)
        model.append(MODEL)
        support.append(SUPPORT)
        lengths.append(8 if heavy else 2)
        targets.append("d" if heavy else "a")
    return pools, model, support, lengths, targets


def test_tradeoff_raises_the_worse_served_group() -> None:
    pools, model, support, lengths, targets = _direction_case()
    tiers = {"a": "head", "b": "head", "c": "tail", "d": "tail"}
    table = tradeoff(pools, model, support, lengths, targets, 4, [0.5, 0.8], tiers, n_resamples=200)
    assert table["strength"].tolist() == [0.0, 0.5, 0.8]
    first, last = table.iloc[0], table.iloc[-1]
    # strength 0: light ndcg 1, heavy ndcg 1/log2(5); ratio = 1/log2(5)
    assert first["ndcg_light"] == pytest.approx(1.0)
    assert first["ndcg_heavy"] == pytest.approx(1 / np.log2(5))
    assert first["ratio"] == pytest.approx(1 / np.log2(5))
    # strength 0.5: the opposite signals cancel, ties keep the pool order: nothing moves
    assert table.iloc[1]["ratio"] == pytest.approx(first["ratio"])
    # strength 0.8: heavy shoppers get d first, light ones are untouched
    assert last["ndcg_heavy"] == pytest.approx(1.0)
    assert last["ndcg_light"] == pytest.approx(1.0)
    assert last["ratio"] == pytest.approx(1.0)
    assert last["ndcg_loss"] < 0
    # all cases in a group score the same, so every resample gives the same ratio
    assert first["ratio_low"] == pytest.approx(first["ratio"]) and first["ratio_high"] == pytest.approx(first["ratio"])
    # the paired gain: every resample's ratio rises to 1, so the gain interval sits above 0
    assert first["gain_low"] == pytest.approx(0.0) and first["gain_high"] == pytest.approx(0.0)
    assert last["gain_low"] == pytest.approx(1 - 1 / np.log2(5))
    assert last["provider_exposure_ratio"] > first["provider_exposure_ratio"]  # tail "d" moved up for half
    assert choose_strength(table) == 0.8
    assert worse_served([1.0] * 40 + [0.2] * 40, lengths) == "heavy"


def test_choose_strength_respects_the_ndcg_budget() -> None:
    import pandas as pd

    table = pd.DataFrame({"strength": [0.0, 0.2, 0.4], "ndcg": [0.100, 0.099, 0.090], "ratio": [0.70, 0.75, 0.80]})
    assert choose_strength(table) == 0.0  # no loss allowed
    assert choose_strength(table, max_ndcg_loss=0.02) == 0.2
    assert choose_strength(table, max_ndcg_loss=0.2) == 0.4


def test_bootstrap_ratios_hand_worked() -> None:
    ndcg = np.array([1.0, 0.5, 0.2, 0.4])
    labels = np.array(["light", "light", "heavy", "heavy"], dtype=object)
    # resample 0: all four (light 0.75, heavy 0.3 -> 0.4); resample 1: only light shoppers -> no ratio
    got = bootstrap_ratios(ndcg, labels, np.array([[0, 1, 2, 3], [0, 1, 0, 1]]))
    assert got[0] == pytest.approx(0.4) and np.isnan(got[1])
    idx = shopper_resamples(4, n_resamples=5, seed=1)
    assert idx.shape == (5, 4) and idx.min() >= 0 and idx.max() <= 3
    assert (shopper_resamples(4, 5, seed=1) == idx).all()


def test_unseen_marks_history_items() -> None:
    assert unseen([POOL, ["x", "a"]], [["b", "d"], []]) == [[1.0, 0.0, 1.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="one per shopper"):
        unseen([POOL], [])


def test_unseen_support_demotes_a_heavy_shoppers_repeats_only() -> None:
    # the model ranks the history item "b" second. z(unseen) = [0.577, -1.732, 0.577, 0.577]; at 0.3 the heavy
    # shopper's b: 0.7 * 0.447 - 0.3 * 1.732 = -0.207, below c: -0.313 + 0.173 = -0.140, above d: -0.766
    histories = [["b"], ["b", "x", "y", "z"]]  # median 2.5: light, heavy
    pools = [POOL, POOL]
    out = mitigate(
        pools,
        [MODEL] * 2,
        unseen(pools, histories),
        [len(h) for h in histories],
        UserFairnessConfig(strength=0.3),
        4,
    )
    assert out[0] == ["a", "b", "c", "d"]
    assert out[1] == ["a", "c", "b", "d"]


def test_mitigated_scores_feed_the_provider_reranker() -> None:
    pools, model, support, lengths, targets = _direction_case()
    scores = mitigated_scores(pools, model, support, lengths, UserFairnessConfig(strength=0.8))
    assert scores[0].tolist() == MODEL  # light: the model's own scores
    assert int(np.argmax(scores[-1])) == 3  # heavy: "d" on top
    tiers = {"a": "head", "b": "head", "c": "tail", "d": "tail"}
    is_tail = {item: tier == "tail" for item, tier in tiers.items()}
    # a tail share of 1 puts the best tail item first for everyone: c for light shoppers, d for heavy ones
    table = tradeoff(
        pools,
        model,
        support,
        lengths,
        targets,
        4,
        [0.8],
        tiers,
        n_resamples=0,
        provider=(is_tail, RerankConfig(min_tail_share=1.0, window=4)),
    )
    plain, mitigated_row = table.iloc[0], table.iloc[1]
    assert plain["ndcg_light"] == pytest.approx(1 / np.log2(4))  # a after c, d ... order c, d, a, b
    assert mitigated_row["ndcg_heavy"] == pytest.approx(1.0)
    assert plain["ratio_low"] is None and plain["gain_low"] is None
