"""Baselines say what they learn from shoppers; the DP ones rank by the candidate's released transition counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

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


def _loop_cooccurrence(item_ids: list[str], seq: pd.DataFrame, window: int = 5, gap_decay: float = 0.6) -> np.ndarray:
    """The definition, as a loop over each shopper's sequence (a dense reference for small catalogues)."""
    index_of = {item: i for i, item in enumerate(item_ids)}
    m = np.zeros((len(item_ids), len(item_ids)), dtype=np.float64)
    for _, group in seq.groupby("user_id", sort=False):
        items = [index_of[i] for i in group["item_id"] if i in index_of]
        for pos, nxt in enumerate(items):
            for gap in range(1, min(window, pos) + 1):
                m[items[pos - gap], nxt] += gap_decay ** (gap - 1)
    return m


def test_cooccurrence_counts_and_ranks_as_the_dense_definition() -> None:
    rng = np.random.default_rng(3)
    item_ids = [f"i{j}" for j in range(60)]
    seq = pd.DataFrame(
        {
            "user_id": rng.choice([f"u{j}" for j in range(25)], size=600),
            "item_id": rng.choice([*item_ids, "unknown"], size=600, p=[0.95 / 60] * 60 + [0.05]),
        }
    )
    model = bl.Cooccurrence.fit(item_ids, seq)
    dense = _loop_cooccurrence(item_ids, seq)
    np.testing.assert_allclose(model.matrix.toarray(), dense, rtol=1e-6)
    histories = [list(rng.choice(item_ids, size=int(rng.integers(1, 14)))) for _ in range(40)]
    want = []
    for hist in histories:
        score = np.zeros(len(item_ids))
        for age, item in enumerate(reversed(hist[-10:])):
            score += 0.7**age * dense[item_ids.index(item)]
        score = score.astype(np.float32) + 1e-6 * model.popularity / model.popularity.max()
        want.append([item_ids[j] for j in sorted(range(len(score)), key=lambda j: (-score[j], j))[:10]])
    assert model.recommend(histories, 10) == want


def test_cooccurrence_on_a_large_catalogue_with_few_events_allocates_no_n_squared_table() -> None:
    import tracemalloc

    from scipy import sparse

    n = 200_000
    item_ids = [f"i{j}" for j in range(n)]
    seq = pd.DataFrame({"user_id": ["u"] * 4 + ["v"] * 3, "item_id": ["i5", "i7", "i9", "i7", "i199999", "i5", "i3"]})
    table = sparse.csr_matrix((np.log1p([4.0, 2.0]), ([5, 7], [9, 5])), shape=(n, n))
    tracemalloc.start()
    try:
        fitted = bl.Cooccurrence.fit(item_ids, seq)
        private = bl.DPCooccurrence.from_transitions(item_ids, table)
        popular = bl.DPPopularity.from_transitions(item_ids, table)
        recs = [m.recommend([["i5"], ["i7", "i199999"]], 3) for m in (fitted, private, popular)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**30  # a dense float32 table would be 160 GB; one batch of scores is a few hundred MB
    # i5 -> i7: 1 + 0.36 (gaps 1 and 3), i5 -> i3: 1, i5 -> i9: 0.6; the second history's newest item leads
    assert recs[0] == [["i7", "i3", "i9"], ["i5", "i9", "i3"]]
    assert recs[1][0][0] == "i9" and recs[2][0][:2] == ["i9", "i5"]


def test_the_transition_table_is_read_as_csr_from_the_models_item_table() -> None:
    from types import SimpleNamespace

    from ml.training.item_table import ItemTable

    held = ItemTable()
    held.load(sparse.csr_matrix(TABLE), len(TABLE))
    table = bl.transition_table(SimpleNamespace(model=SimpleNamespace(transitions=held)))
    assert isinstance(table, sparse.csr_matrix)
    np.testing.assert_allclose(table.toarray(), TABLE, rtol=1e-6)  # the model holds float32
    assert bl.DPCooccurrence.from_transitions(ITEMS, table).recommend([["a"], ["c"]], 1) == [["b"], ["a"]]
