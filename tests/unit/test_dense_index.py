"""`DenseIndex`: the exact top-n by inner product, whatever the int8 first pass rounds."""

import numpy as np
import pytest

from ml.search.dense import DenseIndex
from ml.topk import top_k


def _expected(table: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    full = queries @ table.T
    rows = top_k(full, n)
    return rows, np.take_along_axis(full, rows, axis=1)


@pytest.mark.parametrize("n_rows", [50, 3000])  # a small table (every score) and the int8 first pass
def test_the_top_is_the_exact_top_of_the_full_scores(n_rows):
    rng = np.random.default_rng(n_rows)
    table = rng.normal(size=(n_rows, 33)).astype(np.float32)
    table[:, -1] = rng.normal(0, 5, size=n_rows)  # a bias-like column on another scale, as augmented items have
    queries = rng.normal(size=(7, 33)).astype(np.float32)
    queries[:, -1] = 1.0
    index = DenseIndex(table)
    for n in (1, 10, 100):
        rows, scores = _expected(table, queries, n)
        for b, (got_rows, got_scores) in enumerate(index.search(queries, n)):
            np.testing.assert_array_equal(got_rows, rows[b])
            np.testing.assert_allclose(got_scores, scores[b], rtol=1e-5, atol=1e-5)


def test_clustered_rows_whose_bounds_overlap_are_scored_exactly():
    """Thousands of near-copies of one vector: the first pass cannot tell them apart, the bound sends every
    contender to the exact score, and equal scores go to the lower row."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=32).astype(np.float32)
    table = np.tile(base, (4000, 1)) + rng.normal(0, 1e-3, size=(4000, 32)).astype(np.float32)
    table[1000] = table[2000] = base * 1.01  # an exact tie at the top
    query = base[None, :]
    rows, _ = DenseIndex(table).search(query, 10)[0]
    expected = top_k(query @ table.T, 10)[0]
    np.testing.assert_array_equal(rows, expected)
    assert list(rows[:2]) == [1000, 2000]


def test_asking_for_more_rows_than_the_table_holds_gives_them_all():
    table = np.eye(4, dtype=np.float32)
    rows, scores = DenseIndex(table).search(np.array([[0.0, 2.0, 1.0, 0.0]], dtype=np.float32), 10)[0]
    assert list(rows) == [1, 2, 0, 3] and list(scores) == [2.0, 1.0, 0.0, 0.0]
