"""The transition feature's training view: each shopper's own pairs taken out of the released counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from ml.privacy.accounting import selection_threshold
from ml.privacy.transitions import own_transitions, transition_feature
from ml.training.history_features import TRANSITION_DECAY

N_ITEMS, MAX_HISTORY, PER_USER = 8, 3, 8
SEQUENCES = {"a": [0, 1, 2, 3], "b": [0, 1, 4], "c": [0, 1, 2, 5], "d": [6, 7]}
# every pair held by at least two shoppers: taking one shopper out leaves the same pairs, so the same noise draws
MANY = {
    **{f"p{u}": [0, 1, 2, 3] for u in range(7)},
    **{f"q{u}": [0, 1, 4] for u in range(3)},
    **{f"r{u}": [6, 7] for u in range(2)},
}


def _frame(sequences: dict[str, list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, pos, f"i{item}") for u, items in sequences.items() for pos, item in enumerate(items)],
        columns=["user_id", "position", "item_id"],
    )


def _decayed(table: np.ndarray, history: list[int]) -> np.ndarray:
    """The model's transition feature of one history (oldest first): decayed rows, newest first."""
    recent = history[-MAX_HISTORY:][::-1]
    return sum((TRANSITION_DECAY**p * table[item] for p, item in enumerate(recent)), np.zeros(N_ITEMS))


def _settings(sigma: float | None) -> dict:
    tau = None if sigma is None else selection_threshold(sigma, PER_USER, 5e-6)
    return {"seed": 3, "pairs_per_user": PER_USER, "floor": 2.0, "sigma": sigma, "threshold": tau}


def _check_sparse(table: sparse.csr_matrix, n: int) -> None:
    assert sparse.isspmatrix_csr(table) and table.shape == (n, n) and table.dtype == np.float32
    assert table.has_sorted_indices and np.all(table.data > 0)  # no stored zeros


@pytest.mark.parametrize(("sequences", "sigma"), [(SEQUENCES, None), (MANY, None), (MANY, 0.01), (MANY, 0.3)])
def test_a_shoppers_own_entries_give_the_feature_of_the_counts_without_that_shopper(sequences, sigma):
    # with DP both tables draw the same noise: no shopper is capped, so the generator draws nothing else, and
    # every pair of MANY keeps a holder without any one shopper. At sigma 0.3 the threshold (about 5 counts)
    # keeps some pairs and drops others, with or without the shopper
    settings = _settings(sigma)
    index_of = {f"i{j}": j for j in range(N_ITEMS)}
    frame = _frame(sequences)
    table, own = transition_feature(frame, set(sequences), index_of, **settings)
    _check_sparse(table, N_ITEMS)
    assert set(own) == set(sequences)
    dense = table.toarray()
    for user, items in sequences.items():
        without, _ = transition_feature(frame, set(sequences) - {user}, index_of, **settings)
        for end in range(1, len(items)):  # every history the shopper's examples can have
            history = items[:end]
            feature = _decayed(dense, history)
            for item, value in own_transitions(history, own[user], MAX_HISTORY):
                feature[item] += value
            np.testing.assert_allclose(feature, _decayed(without.toarray(), history), atol=1e-6)
    if sigma == 0.01:
        # the pair 0 -> 1 is in ten shoppers' counts: taking one out leaves nine; 6 -> 7 is in two: taking one out
        # leaves one, below the threshold (about 1.14), so the pair leaves the table
        floor = 2.0 * sigma * np.sqrt(PER_USER)
        assert dense[0, 1] == pytest.approx(np.log1p(10 - floor), abs=0.1)  # noise std 0.028
        assert dict(own["q0"][0]) == pytest.approx({1: np.log1p(9 - floor) - dense[0, 1]}, abs=0.1)
        assert dict(own["r0"][6]) == pytest.approx({7: -dense[6, 7]})
    if sigma is None:
        assert dense[0, 1] == pytest.approx(np.log1p(sum(items[:2] == [0, 1] for items in sequences.values())))


def test_released_values_are_the_dense_computation_with_the_same_noise():
    # 300 shoppers walking over 40 items, popular ones more often: counts from 1 to dozens, some above the threshold
    n, sigma, floor = 40, 0.5, 1.5
    rng = np.random.default_rng(4)
    walks = {f"u{u}": list((rng.zipf(1.5, size=5) - 1) % n) for u in range(300)}
    index_of = {f"i{j}": j for j in range(n)}
    tau = selection_threshold(sigma, PER_USER, 1e-3)
    table, _ = transition_feature(
        _frame(walks), set(walks), index_of, seed=9, pairs_per_user=PER_USER, floor=floor, sigma=sigma, threshold=tau
    )
    _check_sparse(table, n)
    # by hand, densely: the exact counts, then one draw of the run's generator per pair that occurs, in key order
    counts = np.zeros((n, n))
    for items in walks.values():
        for a, b in dict.fromkeys(zip(items[:-1], items[1:], strict=True)):
            counts[a, b] += 1
    rows, cols = np.nonzero(counts)  # row-major: the key order a * n + b
    noised = np.zeros((n, n))
    noised[rows, cols] = counts[rows, cols] + np.random.default_rng(10).standard_normal(len(rows)) * sigma * np.sqrt(8)
    cut = floor * sigma * np.sqrt(PER_USER)
    expected = np.where(noised > tau, np.log1p(np.maximum(noised - cut, 0.0)), 0.0)
    assert 0 < np.count_nonzero(expected) < len(rows)  # the threshold keeps some pairs and drops others
    np.testing.assert_allclose(table.toarray(), expected, rtol=1e-6)


def test_a_release_that_keeps_no_pair_gives_an_empty_table_and_no_own_entries():
    """Few shoppers against a high threshold: no pair is released (as on Coat at epsilon 8), and the feature is
    empty rather than an error."""
    table, own = transition_feature(
        _frame(SEQUENCES),
        set(SEQUENCES),
        {f"i{j}": j for j in range(N_ITEMS)},
        **{**_settings(0.5), "threshold": 1e6},
    )
    _check_sparse(table, N_ITEMS)
    assert table.nnz == 0
    assert own == {user: {} for user in SEQUENCES}


def test_noised_counts_need_their_threshold():
    with pytest.raises(ValueError, match="release threshold"):
        transition_feature(
            _frame(SEQUENCES),
            set(SEQUENCES),
            {f"i{j}": j for j in range(N_ITEMS)},
            seed=3,
            pairs_per_user=PER_USER,
            floor=2.0,
            sigma=0.5,
        )


def test_own_entries_follow_the_history_order_and_decay():
    own = {2: [(5, -1.0)], 4: [(6, -0.5), (7, -0.25)]}
    # newest first: 4 at position 0, 2 at position 1, 9 (no own pairs) at 2; 1 lies beyond MAX_HISTORY
    assert own_transitions([1, 9, 2, 4], own, MAX_HISTORY) == [(6, -0.5), (7, -0.25), (5, -TRANSITION_DECAY)]
    assert own_transitions([], own, MAX_HISTORY) == []


def test_a_shopper_must_be_allowed_a_pair():
    with pytest.raises(ValueError, match="pairs_per_user"):
        transition_feature(
            _frame(SEQUENCES),
            set(SEQUENCES),
            {f"i{j}": j for j in range(N_ITEMS)},
            seed=3,
            pairs_per_user=0,
            floor=2.0,
            sigma=None,
        )
