"""The evaluation stage's user-side diagnostic: the worse-served activity group, the mitigation's trade-off, the card."""

import numpy as np
import pandas as pd

from ml.evaluation.rerank import RerankConfig
from ml.evaluation.user_fairness import USER_SIDE_STRENGTHS, worse_group_tradeoff


def _world():
    # two light shoppers (history 1) served perfectly, two heavy ones (history 3) whose target is ranked last
    # by the model but is the only candidate not in their history: the mitigation lifts exactly them
    histories = [["a"], ["b"], ["x", "y", "z"], ["x", "y", "z"]]
    pool = [["a", "t1", "u"], ["b", "t2", "u"], ["x", "y", "t3"], ["y", "z", "t4"]]
    pool_scores = [
        np.array([3.0, 2.0, 1.0]),
        np.array([3.0, 2.0, 1.0]),
        np.array([3.0, 2.0, 1.0]),
        np.array([3.0, 2.0, 1.0]),
    ]
    cases = pd.DataFrame({"item_id": ["a", "b", "t3", "t4"], "user_id": ["s1", "s2", "s3", "s4"]})
    per_case = pd.DataFrame({"user_id": cases["user_id"], "ndcg.candidate": [1.0, 1.0, 0.5, 0.5]})
    tiers = {i: "head" for p in pool for i in p}
    return pool, pool_scores, histories, cases, per_case, tiers


def test_the_diagnostic_names_the_worse_served_group_and_measures_each_strength():
    pool, scores, histories, cases, per_case, tiers = _world()
    out = worse_group_tradeoff(
        pool,
        scores,
        histories,
        cases,
        per_case,
        2,
        tiers,
        ({i: False for i in tiers}, RerankConfig(min_tail_share=0.0, window=2)),
        seed=0,
    )
    assert out["group"] == "heavy" and out["applied"] is False
    rows = out["tradeoff"]
    assert [r["strength"] for r in rows] == [0.0, *USER_SIDE_STRENGTHS]
    assert rows[0]["ndcg_heavy"] < rows[-1]["ndcg_heavy"]  # the heavy shoppers' unseen targets move up
    assert rows[-1]["ndcg_light"] == rows[0]["ndcg_light"] == 1.0  # light shoppers' rankings are untouched


def test_one_activity_group_only_says_why_instead_of_failing():
    pool, scores, histories, cases, per_case, tiers = _world()
    same = [["a"]] * 4
    out = worse_group_tradeoff(
        pool,
        scores,
        same,
        cases,
        per_case,
        2,
        tiers,
        ({i: False for i in tiers}, RerankConfig(min_tail_share=0.0, window=2)),
        seed=0,
    )
    assert out["group"] is None and out["tradeoff"] == [] and "both activity groups" in out["reason"]


def test_the_card_shows_the_diagnostic_table_as_not_applied():
    from test_card_uncertainty import _card  # the card test's evaluation record

    record = {
        "group": "heavy",
        "support": "unseen",
        "applied": False,
        "tradeoff": [
            {
                "strength": 0.0,
                "ndcg": 0.105,
                "ndcg_light": 0.12,
                "ndcg_heavy": 0.084,
                "ratio": 0.7,
                "ratio_low": 0.65,
                "ratio_high": 0.75,
                "provider_exposure_ratio": 0.889,
            },
            {
                "strength": 0.3,
                "ndcg": 0.107,
                "ndcg_light": 0.12,
                "ndcg_heavy": 0.088,
                "ratio": 0.733,
                "ratio_low": 0.68,
                "ratio_high": 0.78,
                "provider_exposure_ratio": 0.878,
            },
        ],
    }
    text = _card(user_fairness_mitigation=record)
    assert "User-side mitigation (diagnostic, not applied): the heavy shoppers are the worse served" in text
    assert "| 0.3 | 0.1070 | 0.1200 | 0.0880 | 0.733 [0.680, 0.780] | 0.878 |" in text
    assert "User-side mitigation" not in _card()
