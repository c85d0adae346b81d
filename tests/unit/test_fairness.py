"""User-group and provider fairness on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.evaluation.fairness import (
    activity_groups,
    brand_tiers,
    item_tiers,
    provider_exposure,
    user_group_fairness,
)


def test_activity_groups_split_at_median_ties_light() -> None:
    assert activity_groups([1, 5, 3, 3, 10]) == ["light", "heavy", "light", "light", "heavy"]  # median 3
    assert activity_groups([1, 2, 3, 4]) == ["light", "light", "heavy", "heavy"]  # median 2.5
    assert activity_groups([]) == []


def _audit_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    # f: 25 cases, ndcg 1.0 x20 + 0.0 x5 = 0.8, recall all 1.0
    # m: 25 cases, ndcg 0.4 each, recall 1.0 x10 + 0.0 x15 = 0.4
    # unknown (missing value): 3 cases, x: 5 cases (below min_group_size 20), all zeros
    ndcg = [1.0] * 20 + [0.0] * 5 + [0.4] * 25 + [0.0] * 8
    recall = [1.0] * 25 + [1.0] * 10 + [0.0] * 15 + [0.0] * 8
    gender = ["f"] * 25 + ["m"] * 25 + [None, np.nan, ""] + ["x"] * 5
    per_case = pd.DataFrame({"ndcg": ndcg, "recall": recall, "hit": [1.0] * 58})
    groups = pd.DataFrame({"gender": gender, "activity": activity_groups(list(range(58)))})
    return per_case, groups


def test_user_group_fairness_hand_worked() -> None:
    per_case, groups = _audit_frames()
    out = user_group_fairness(per_case, groups[["gender"]])["gender"]
    assert out["by_group"]["f"] == {"ndcg": pytest.approx(0.8), "recall": pytest.approx(1.0), "n": 25}
    assert out["by_group"]["m"] == {"ndcg": pytest.approx(0.4), "recall": pytest.approx(0.4), "n": 25}
    assert out["by_group"]["unknown"]["n"] == 3
    assert out["by_group"]["x"]["n"] == 5
    assert out["excluded"] == ["unknown", "x"]
    assert out["ratio"] == {"ndcg": pytest.approx(0.5), "recall": pytest.approx(0.4)}
    assert out["gap"] == {"ndcg": pytest.approx(0.4), "recall": pytest.approx(0.6)}
    assert out["overall"]["ndcg"] == pytest.approx((20 + 10) / 58)


def test_user_group_fairness_every_attribute_and_metric() -> None:
    per_case, groups = _audit_frames()
    out = user_group_fairness(per_case, groups, metrics=("ndcg", "hit"), min_group_size=5)
    assert set(out) == {"gender", "activity"}
    assert out["gender"]["excluded"] == ["unknown"]  # x has 5 cases: now eligible
    assert out["gender"]["ratio"]["ndcg"] == pytest.approx(0.0)  # x's mean is 0
    assert out["gender"]["ratio"]["hit"] == pytest.approx(1.0)
    # activity: 29 light (first half: ndcg 20*1 + 5*0 + 4*0.4 = 21.6), 29 heavy (21*0.4 = 8.4)
    assert out["activity"]["by_group"]["light"]["ndcg"] == pytest.approx(21.6 / 29)
    assert out["activity"]["ratio"]["ndcg"] == pytest.approx(8.4 / 21.6)


def test_user_group_fairness_single_eligible_group_has_no_ratio() -> None:
    per_case = pd.DataFrame({"ndcg": [0.5] * 30, "recall": [1.0] * 30})
    groups = pd.DataFrame({"age_band": ["18-24"] * 25 + ["65+"] * 5})
    out = user_group_fairness(per_case, groups)["age_band"]
    assert out["ratio"] == {"ndcg": None, "recall": None}
    assert out["gap"] == {"ndcg": None, "recall": None}
    assert out["excluded"] == ["65+"]


def test_user_group_fairness_all_zero_ratio_undefined() -> None:
    per_case = pd.DataFrame({"ndcg": [0.0] * 4, "recall": [0.0] * 4})
    out = user_group_fairness(per_case, pd.DataFrame({"g": ["a", "a", "b", "b"]}), min_group_size=1)["g"]
    assert out["ratio"]["ndcg"] is None
    assert out["gap"]["ndcg"] == 0.0


def test_user_group_fairness_input_errors() -> None:
    per_case, groups = _audit_frames()
    with pytest.raises(ValueError, match="no column"):
        user_group_fairness(per_case, groups, metrics=("mrr",))
    with pytest.raises(ValueError, match="groups has 3 rows"):
        user_group_fairness(per_case, groups.head(3))


ITEM_BRAND = {"i1": "A", "i2": "A", "i3": "B", "i4": "C", "i5": "D", "i6": "E"}
ITEM_POP = {"i1": 50.0, "i2": 10.0, "i3": 25.0, "i4": 10.0, "i5": 5.0}  # A 60, B 25, C 10, D 5, E 0


def test_brand_tiers_fewest_brands_reaching_head_share() -> None:
    assert brand_tiers(ITEM_BRAND, ITEM_POP, 0.5) == {
        "A": "head",
        "B": "tail",
        "C": "tail",
        "D": "tail",
        "E": "tail",
    }
    tiers = brand_tiers(ITEM_BRAND, ITEM_POP, 0.7)  # A alone holds 60 < 70
    assert sorted(b for b, t in tiers.items() if t == "head") == ["A", "B"]
    tiers = brand_tiers(ITEM_BRAND, ITEM_POP, 0.85)  # A + B = 85 exactly
    assert sorted(b for b, t in tiers.items() if t == "head") == ["A", "B"]
    assert item_tiers(ITEM_BRAND, tiers)["i4"] == "tail"


def test_brand_tiers_ties_by_name_and_errors() -> None:
    tiers = brand_tiers({"x": "Zed", "y": "Acme"}, {"x": 5.0, "y": 5.0}, 0.5)
    assert tiers == {"Acme": "head", "Zed": "tail"}
    with pytest.raises(ValueError, match="no interactions"):
        brand_tiers(ITEM_BRAND, {}, 0.5)
    with pytest.raises(ValueError, match="head_share"):
        brand_tiers(ITEM_BRAND, ITEM_POP, 0.0)


TIER = {"h1": "head", "h2": "head", "t1": "tail", "t2": "tail"}


def test_provider_exposure_hand_worked() -> None:
    # k = 2, weights 1 and 1/log2(3) = 0.630930
    # case 0 [h1, t1 | t2]: tail gets 0.630930; case 1 [h2, t1]: tail gets 0.630930
    # tail exposure share = 2 * 0.630930 / (2 * 1.630930) = 0.386853
    # relevant items: t2 (tail), h1 (head) -> relevance share 0.5
    out = provider_exposure([["h1", "t1", "t2"], ["h2", "t1"]], ["t2", "h1"], TIER, k=2)
    share = 1 / math.log2(3) / (1 + 1 / math.log2(3))
    assert out["tail_exposure_share"] == pytest.approx(share)
    assert out["tail_exposure_share"] == pytest.approx(0.386853, abs=1e-6)
    assert out["tail_relevance_share"] == pytest.approx(0.5)
    assert out["ratio"] == pytest.approx(share / 0.5)
    assert out["n_untiered"] == 0


def test_provider_exposure_no_tail_relevance_and_untiered_items() -> None:
    out = provider_exposure([["t1", "new"]], [{"h1", "h2"}], TIER, k=2)
    assert out["tail_exposure_share"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert out["tail_relevance_share"] == 0.0
    assert out["ratio"] is None
    assert out["n_untiered"] == 1


def test_provider_exposure_refuses_a_bad_k_and_unpaired_targets_but_measures_no_cases() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        provider_exposure([["t1"]], ["t1"], TIER, k=0)
    with pytest.raises(ValueError, match="1 cases but targets has 2; pass one target"):
        provider_exposure([["t1"]], ["t1", "h1"], TIER, k=2)
    assert provider_exposure([], [], TIER, k=2)["n_cases"] == 0  # unlike the ranking metrics, no case is no error
