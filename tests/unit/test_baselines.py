"""Baselines say what they learn from shoppers; the DP ones rank by the candidate's released transition counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import baselines as bl

ITEMS = ["a", "b", "c"]
# released counts a->b 3, b->a 1, c->a 2 (the model keeps log1p of them)
TABLE = np.log1p(np.array([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))


def test_every_baseline_says_what_it_learns_from_shoppers() -> None:
    seq = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]})
    learns = {
        b.name: b.learns
        for b in (
            bl.Popularity.fit(ITEMS, seq),
            bl.Cooccurrence.fit(ITEMS, seq),
            bl.BM25(
                item_ids=ITEMS, texts=["red hat", "blue hat", "red cup"], titles=["red hat", "blue hat", "red cup"]
            ),
            bl.ZeroShot(item_ids=ITEMS, vectors=np.eye(3, dtype=np.float32)),
            bl.DPPopularity.from_transitions(ITEMS, TABLE),
            bl.DPCooccurrence.from_transitions(ITEMS, TABLE),
        )
    }
    assert learns == {
        "popularity": "non_private",
        "cooccurrence": "non_private",
        "bm25": "public",
        "zero_shot_minilm": "public",
        "dp_popularity": "private",
        "dp_cooccurrence": "private",
    }
    with pytest.raises(ValueError, match="learns='sometimes' is not one of"):
        bl.Baseline(item_ids=ITEMS, learns="sometimes")


def test_dp_popularity_sums_the_released_counts_per_next_item() -> None:
    model = bl.DPPopularity.from_transitions(ITEMS, TABLE)
    assert model.counts.tolist() == pytest.approx([3.0, 3.0, 0.0])  # a follows b and c (1 + 2); b follows a (3)
    assert model.recommend([["c"]], 2)[0][1] != "c"


def test_dp_cooccurrence_ranks_by_the_history_items_released_rows() -> None:
    model = bl.DPCooccurrence.from_transitions(ITEMS, TABLE)
    assert model.recommend([["a"], ["c"]], 1) == [["b"], ["a"]]


def test_dp_baselines_are_never_fitted_on_raw_events_and_need_the_catalogues_table() -> None:
    seq = pd.DataFrame({"user_id": ["u"], "item_id": ["a"]})
    with pytest.raises(TypeError, match="never fitted on raw events"):
        bl.DPCooccurrence.fit(ITEMS, seq)
    with pytest.raises(ValueError, match=r"not 3 x 3"):
        bl.DPPopularity.from_transitions(ITEMS, np.zeros((1, 1)))


def test_the_best_baseline_is_chosen_among_the_kinds_asked_for() -> None:
    ndcg = {"cooccurrence": 0.10, "dp_cooccurrence": 0.09, "bm25": 0.07, "popularity": 0.04}
    learns = {
        "cooccurrence": "non_private",
        "dp_cooccurrence": "private",
        "bm25": "public",
        "popularity": "non_private",
    }
    assert bl.best_baseline(ndcg, learns, bl.SHIPPABLE) == "dp_cooccurrence"
    assert bl.best_baseline(ndcg, learns, (bl.NON_PRIVATE,)) == "cooccurrence"
    assert bl.best_baseline(ndcg, learns, ("nothing",)) is None
