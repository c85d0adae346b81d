"""top_k: the k best of each row, best first, equal scores to the lower column, the same on every CPU."""

import numpy as np
import pytest

from ml.topk import top_k


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    # a stable sort keeps equal values in column order: the rule top_k must follow
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_top_k_orders_by_score_then_lower_column():
    scores = np.array(
        [
            [0.1, 0.5, 0.5, 0.9, 0.5],
            [2.0, 2.0, 2.0, 2.0, 2.0],  # all equal: the first k columns
            [-1.0, -np.inf, 3.0, 3.0, 0.0],
        ]
    )
    assert top_k(scores, 3).tolist() == [[3, 1, 2], [0, 1, 2], [2, 3, 4]]
    assert top_k(scores, 10).shape == (3, 5)  # k beyond the columns: every column
    np.testing.assert_array_equal(top_k(scores, 5), _reference(scores, 5))


def test_top_k_matches_a_stable_sort_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 257)).astype(np.float32)  # four values: ties everywhere, at every cut
    for k in (1, 10, 64, 257):
        np.testing.assert_array_equal(top_k(scores, k), _reference(scores, k))


def test_top_k_edge_cases():
    assert top_k(np.zeros((0, 5)), 3).shape == (0, 3)
    assert top_k(np.zeros((2, 5)), 0).shape == (2, 0)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="2-d"):
        top_k(np.array([0.1, 0.2]), 1)


def test_best_orders_candidates_by_score_then_lower_row_whatever_their_order():
    from ml.topk import best

    rows = np.array([13, 11, 12, 10])
    got_rows, got_scores = best(rows, np.array([2.0, 3.0, 3.0, 3.0], dtype=np.float32), 3)
    assert got_rows.tolist() == [10, 11, 12] and got_scores.tolist() == [3.0, 3.0, 3.0]
    assert best(rows, np.array([1.0, 0.0, 2.0, 0.5]), 10)[0].tolist() == [12, 13, 10, 11]
    with pytest.raises(ValueError, match="one score per row"):
        best(rows, np.zeros(3), 2)
