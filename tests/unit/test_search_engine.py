"""The search ranking's parts by hand: reciprocal rank fusion, the lexical side, the engine and history blending."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.search.engine import (
    LexicalIndex,
    SearchEngine,
    SearchSettings,
    blend_history,
    dense_top,
    search_texts,
)
from ml.search.fusion import RRF_K, fuse

# (five items: rank_bm25's idf, log((N - n + 0.5) / (n + 0.5)), is exactly 0 for a word in half of the items)
ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "title": ["Trail tent 2p", "Camp stove", "Down sleeping bag", "Tent pegs steel", "Water bottle"],
        "brand": ["Acme", "Bolt", "Acme", None, "Bolt"],
        "category": ["camping"] * 5,
        "description": [""] * 5,
    }
)


def test_fusion_hand_worked():
    # row 0: ranks 1 and 2 -> 1/61 + 1/62; row 2: ranks 3 and 1 -> 1/63 + 1/61; row 1: rank 2 of the first only
    rows, scores = fuse([np.array([0, 1, 2]), np.array([2, 0])], [1.0, 1.0], k=10)
    assert rows.tolist() == [0, 2, 1]
    assert scores == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62], rel=1e-12)
    assert RRF_K == 60.0
    # a weight scales that ranking's share; k cuts the list
    rows, scores = fuse([np.array([0, 1]), np.array([1, 0])], [1.0, 2.0], k=1)
    assert rows.tolist() == [1] and scores == pytest.approx([1 / 62 + 2 / 61])


def test_fusion_corner_cases():
    # equal fused scores go to the lower row, whichever ranking holds it
    rows, _ = fuse([np.array([5]), np.array([3])], [1.0, 1.0], k=5)
    assert rows.tolist() == [3, 5]
    # -1 is padding; a weight-0 ranking adds nothing (its rows are not even listed)
    rows, scores = fuse([np.array([-1, 4]), np.array([9])], [1.0, 0.0], k=5)
    assert rows.tolist() == [4] and scores == pytest.approx([1 / 62])
    rows, scores = fuse([np.array([], dtype=np.int64)], [1.0], k=3)
    assert rows.size == 0 and scores.size == 0
    with pytest.raises(ValueError, match="one weight per ranking"):
        fuse([np.array([0]), np.array([1])], [1.0], k=1)


def test_settings_refuse_values_outside_their_range():
    with pytest.raises(ValueError, match="lexical_weight"):
        SearchSettings(lexical_weight=-0.1)
    with pytest.raises(ValueError, match="history_weight"):
        SearchSettings(history_weight=1.0)
    with pytest.raises(ValueError, match="depth"):
        SearchSettings(depth=0)


def test_search_texts_keep_title_brand_and_category_and_skip_missing_fields():
    assert search_texts(ITEMS) == [
        "Trail tent 2p Acme camping",
        "Camp stove Bolt camping",
        "Down sleeping bag Acme camping",
        "Tent pegs steel camping",
        "Water bottle Bolt camping",
    ]
    assert search_texts(ITEMS[["title"]]) == ITEMS["title"].tolist()


def test_lexical_top_lists_only_items_whose_words_match():
    index = LexicalIndex(search_texts(ITEMS))
    got = index.top(["tent", "acme", "zzz nothing", "", "T E N T", "TENT"], n=10)
    assert sorted(got[0].tolist()) == [0, 3]
    assert sorted(got[1].tolist()) == [0, 2]
    assert got[2].size == 0 and got[3].size == 0  # no word matches; no word at all
    assert got[4].size == 0  # one-letter words are not words
    assert got[5].tolist() == got[0].tolist()  # case does not matter
    assert index.top(["tent"], n=1)[0].size == 1


def test_engine_needs_a_lexical_index_to_weigh_it_and_one_dense_ranking_per_query():
    with pytest.raises(ValueError, match="LexicalIndex"):
        SearchEngine(None, SearchSettings(lexical_weight=1.0))
    engine = SearchEngine.for_items(ITEMS, SearchSettings(lexical_weight=1.0, depth=3))
    with pytest.raises(ValueError, match="2 queries but 1 dense"):
        engine.fuse(["a", "b"], [np.array([0])], k=2)


def test_engine_fuses_dense_and_lexical_and_off_means_dense_only():
    dense = [np.array([1, 2, 0, 3, 4]), np.array([1, 2, 0, 3, 4])]
    on = SearchEngine.for_items(ITEMS, SearchSettings(lexical_weight=1.0, depth=2))
    (tent, _), (nothing, _) = on.fuse(["tent", "qqq"], dense, k=4)
    # "tent": BM25 holds rows 3 (the shorter text) and 0, the dense side (2 deep) rows 1 and 2; each side's first
    # gets 1/61 and its second 1/62, and equal scores go to the lower row
    assert tent.tolist() == [1, 3, 0, 2]
    assert nothing.tolist() == [1, 2]  # no word matches: the dense side alone, `depth` deep
    off = SearchEngine.for_items(ITEMS, SearchSettings(lexical_weight=0.0, depth=3))
    assert off.lexical is None
    rows, scores = off.fuse(["tent"], dense[:1], k=2)[0]
    assert rows.tolist() == [1, 2] and scores == pytest.approx([1 / 61, 1 / 62])


def test_dense_top_breaks_ties_by_lower_row():
    got = dense_top(np.array([[0.5, 0.9, 0.5, 0.1]]), 3)
    assert got[0].tolist() == [1, 0, 2]


def test_history_blend_moves_only_rows_with_history_and_stays_unit_length():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    h = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    got = blend_history(q, h, np.array([True, False]), 0.25)
    assert got[1].tolist() == [0.0, 1.0]
    expected = np.array([0.75, 0.25]) / np.hypot(0.75, 0.25)
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(blend_history(q, h, np.array([True, True]), 0.0), q)
    np.testing.assert_array_equal(blend_history(q, None, np.array([True, True]), 0.5), q)
