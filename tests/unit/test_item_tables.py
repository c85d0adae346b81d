"""Sparse item x item tables: BM25 neighbour lists against the dense similarity, and decayed history reads
against dense numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from ml.item_tables import decayed_rows, lexical_neighbours
from ml.lexical import BM25Index, words

TITLES = ["red wool hat", "blue wool hat", "red ceramic cup", "steel camping stove", "camping tent", "green cup"]
TEXTS = [
    "red wool hat warm winter",
    "blue wool hat knitted",
    "red ceramic cup for tea",
    "steel camping stove gas",
    "camping tent two person",
    "green ceramic cup",
]


def dense_similarity(titles: list[str], texts: list[str]) -> np.ndarray:
    """The dense version the neighbour lists replace (the model's dense lexical similarity before the neighbour lists)."""
    rows = BM25Index(texts).scores([words(t) for t in titles], dtype=np.float32)
    top = rows.max(axis=1, keepdims=True)
    rows = np.divide(rows, top, out=np.zeros_like(rows), where=top > 0)
    return (rows + rows.T) / 2


def test_neighbours_with_every_item_kept_are_the_dense_similarity() -> None:
    table = lexical_neighbours(TITLES, TEXTS, top_n=len(TITLES))
    assert isinstance(table, sparse.csr_matrix)
    assert table.dtype == np.float32 and table.shape == (6, 6)
    np.testing.assert_allclose(table.toarray(), dense_similarity(TITLES, TEXTS), rtol=1e-6, atol=1e-7)


def test_neighbours_keep_each_rows_best_and_count_a_missing_direction_as_zero() -> None:
    top_n = 2
    got = lexical_neighbours(TITLES, TEXTS, top_n=top_n).toarray()
    scores = BM25Index(TEXTS).scores([words(t) for t in TITLES], dtype=np.float32)
    forward = np.zeros_like(scores)
    for i, row in enumerate(scores):
        # best first, equal scores: the lower column; only positive scores
        best = [j for j in sorted(range(len(row)), key=lambda j: (-row[j], j)) if row[j] > 0][:top_n]
        forward[i, best] = row[best] / row.max()
    np.testing.assert_allclose(got, (forward + forward.T) / 2, rtol=1e-6, atol=1e-7)
    assert (np.count_nonzero(forward, axis=1) <= top_n).all()
    assert got[0, 0] > 0 and got[3, 4] > 0  # its own text, and "camping" shared both ways
    assert got[0, 3] == 0  # nothing in common


def test_neighbours_of_titles_that_match_nothing_are_empty_rows() -> None:
    titles = ["zz", "red hat", "--", "green mug", "steel pan", "wool scarf"]
    texts = ["red hat", "red cup", "blue hat", "green mug", "steel pan", "wool scarf"]
    table = lexical_neighbours(titles, texts, top_n=2).toarray()
    # item 1's title keeps text 0 (both words) and text 1 ("red" ties with text 2's "hat": the lower item)
    assert table[1, 0] > 0 and table[1, 1] > 0 and table[1, 2] == 0
    assert table[0].tolist() == [0.0, table[1, 0], 0, 0, 0, 0]  # only what item 1's title gives it
    assert not table[2].any()
    assert (table == table.T).all()
    assert lexical_neighbours(["zz"], ["yy"]).nnz == 0


def test_neighbours_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="one title per item text"):
        lexical_neighbours(TITLES, TEXTS[:2])
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        lexical_neighbours(TITLES, TEXTS, top_n=0)


def _history_case(seed: int = 0) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, b, h = 40, 7, 5
    dense = rng.random((n, n)).astype(np.float32) * (rng.random((n, n)) < 0.2)
    rows = rng.integers(0, n, size=(b, h))
    rows[1, :2] = 3  # the same item twice in one history counts twice
    real = rng.random((b, h)) < 0.7
    real[4] = False  # a history with no real position
    return dense, sparse.csr_matrix(dense), rows, real


def _expected_rows(dense: np.ndarray, rows: np.ndarray, real: np.ndarray, decay: float) -> np.ndarray:
    out = np.zeros((rows.shape[0], dense.shape[1]), dtype=np.float64)
    for b in range(rows.shape[0]):
        for p in range(rows.shape[1]):
            if real[b, p]:
                out[b] += decay**p * dense[rows[b, p]].astype(np.float64)
    return out


def test_decayed_rows_match_dense_numpy() -> None:
    dense, table, rows, real = _history_case()
    want = _expected_rows(dense, rows, real, 0.7)
    got = decayed_rows(table, rows, real, 0.7)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not got[4].any()


def test_decayed_reads_refuse_bad_input() -> None:
    dense, table, rows, real = _history_case()
    with pytest.raises(TypeError, match="scipy sparse"):
        decayed_rows(dense, rows, real, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        decayed_rows(table, rows, real[:, :2], 0.5)
    with pytest.raises(ValueError, match="bool mask"):
        decayed_rows(table, rows, real.astype(int), 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 40\)"):
        decayed_rows(table, np.full_like(rows, 40), real, 0.5)
    with pytest.raises(ValueError, match="finite"):
        decayed_rows(table, rows, real, float("nan"))
