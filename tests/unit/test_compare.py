"""compare_rankings: the evaluate stage's comparison on a hand-worked hold-out."""

import math

import pandas as pd
import pytest

from ml.evaluation.compare import compare_rankings, per_case_groups, per_case_resamples

ITEMS = ["a", "b", "c", "d"]
TIERS = {"a": "head", "b": "head", "c": "tail", "d": "tail"}


def _cases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "item_id": ["a", "b", "c", "d"],
            "history": [["b"], ["a", "c"], ["a"], ["b", "c", "a"]],
        }
    )


def _compare(candidate, baselines, learns, groups=None):
    cases = _cases()
    groups = pd.DataFrame({"activity": ["light", "heavy", "light", "heavy"]}) if groups is None else groups
    return compare_rankings(
        candidate,
        baselines,
        learns,
        cases,
        2,
        n_catalog=len(ITEMS),
        item_popularity=dict.fromkeys(ITEMS, 1.0),
        item_tier=TIERS,
        groups=groups,
        seed=0,
    )


def test_the_bar_is_the_best_shippable_baseline_and_every_ranker_is_kept_per_case():
    targets = [["a", "b"], ["b", "a"], ["c", "d"], ["d", "c"]]  # every target at rank 1: NDCG 1
    second = [["b", "a"], ["a", "b"], ["d", "c"], ["c", "d"]]  # every target at rank 2: NDCG 1/log2(3)
    never = [["c", "d"], ["c", "d"], ["a", "b"], ["a", "b"]]  # no target in the top 2: NDCG 0
    out = _compare(
        second,
        {"raw_counts": targets, "text": never, "dp": second},
        {"raw_counts": "non_private", "text": "public", "dp": "private"},
    )
    # the non-private ranker is better but would be refused itself: it is the price of privacy, not the bar
    assert out["best_baseline"] == "dp" and out["best_non_private_baseline"] == "raw_counts"
    assert out["candidate"]["metrics"]["ndcg_at_2"] == pytest.approx(1 / math.log2(3))
    assert out["baselines"]["text"]["metrics"]["ndcg_at_2"] == 0
    assert out["baselines"]["text"]["learns"] == "public"
    per_case = out["per_case"]
    assert list(per_case.columns) == [
        "user_id",
        "group.activity",
        "ndcg.candidate",
        "ndcg.raw_counts",
        "ndcg.text",
        "ndcg.dp",
    ]
    assert per_case["ndcg.raw_counts"].tolist() == [1.0, 1.0, 1.0, 1.0]
    unc = out["uncertainty"]
    assert unc["method"]["n_shoppers"] == 3 and unc["method"]["n_cases"] == 4
    assert unc["candidate_minus"]["dp"] == {"value": 0.0, "lower": 0.0, "upper": 0.0, "confidence": 0.95}
    assert unc["price_of_privacy"]["baseline"] == "raw_counts"
    assert unc["price_of_privacy"]["value"] == pytest.approx(1 / math.log2(3))
    assert list(per_case_groups(per_case).columns) == ["activity"]
    assert per_case_resamples(per_case, 0).n_shoppers == 3


def test_without_a_shippable_baseline_or_with_an_unlabelled_one_it_refuses():
    lists = [["a", "b"]] * 4
    with pytest.raises(ValueError, match="no shippable baseline"):
        _compare(lists, {"raw_counts": lists}, {"raw_counts": "non_private"})
    with pytest.raises(ValueError, match="do not say what they learn"):
        _compare(lists, {"text": lists}, {})
    with pytest.raises(ValueError, match="may not be named 'candidate'"):
        _compare(lists, {"candidate": lists}, {"candidate": "public"})
