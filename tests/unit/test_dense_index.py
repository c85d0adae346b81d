"""`DenseIndex`: the exact top-n by inner product, whatever its first pass (int8 or float32) rounds, and the
choice of that first pass at load."""

import logging

import numpy as np
import pytest
import torch

from ml.search import dense
from ml.search.dense import FIRST_PASS_ENV, MEASURED_BATCHES, MEASURED_ROWS, DenseIndex, QuantizedItems
from ml.serving.batching import DEFAULT_MAX_BATCH
from ml.topk import top_k

MODES = ["int8", "float32", "auto"]


def _expected(table: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    full = queries @ table.T
    rows = top_k(full, n)
    return rows, np.take_along_axis(full, rows, axis=1)


@pytest.mark.parametrize("first_pass", MODES)
@pytest.mark.parametrize("n_rows", [50, 3000])  # a small table (every score) and the first pass
def test_the_top_is_the_exact_top_of_the_full_scores(n_rows, first_pass):
    rng = np.random.default_rng(n_rows)
    table = rng.normal(size=(n_rows, 33)).astype(np.float32)
    table[:, -1] = rng.normal(0, 5, size=n_rows)  # a bias-like column on another scale, as augmented items have
    queries = rng.normal(size=(7, 33)).astype(np.float32)
    queries[:, -1] = 1.0
    index = DenseIndex(table, first_pass)
    assert index.first_pass in ("int8", "float32") and (first_pass == "auto" or index.first_pass == first_pass)
    for n in (1, 10, 100):
        rows, scores = _expected(table, queries, n)
        for b, (got_rows, got_scores) in enumerate(index.search(queries, n)):
            np.testing.assert_array_equal(got_rows, rows[b])
            np.testing.assert_allclose(got_scores, scores[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first_pass", MODES)
def test_clustered_rows_whose_bounds_overlap_are_scored_exactly(first_pass):
    """Thousands of near-copies of one vector: the first pass cannot tell them apart, the bound sends every
    contender to the exact score, and equal scores go to the lower row."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=32).astype(np.float32)
    table = np.tile(base, (4000, 1)) + rng.normal(0, 1e-3, size=(4000, 32)).astype(np.float32)
    table[1000] = table[2000] = base * 1.01  # an exact tie at the top
    query = base[None, :]
    rows, _ = DenseIndex(table, first_pass).search(query, 10)[0]
    expected = top_k(query @ table.T, 10)[0]
    np.testing.assert_array_equal(rows, expected)
    assert list(rows[:2]) == [1000, 2000]


def test_asking_for_more_rows_than_the_table_holds_gives_them_all():
    table = np.eye(4, dtype=np.float32)
    rows, scores = DenseIndex(table).search(np.array([[0.0, 2.0, 1.0, 0.0]], dtype=np.float32), 10)[0]
    assert list(rows) == [1, 2, 0, 3] and list(scores) == [2.0, 1.0, 0.0, 0.0]


def test_both_first_passes_give_the_same_top_for_a_batch():
    """The first pass only generates candidates: int8 and float32 give the same rows after the exact scores."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(5000, 40)).astype(np.float32) * rng.lognormal(0, 1, size=(5000, 1)).astype(np.float32)
    table[9] *= 1000 / np.linalg.norm(table[9])
    table[10:20] = table[9]  # equal rows at the top of query 0: ties go to the lower row in both
    queries = rng.normal(size=(MEASURED_BATCHES[-1], 40)).astype(np.float32)
    queries[0] = table[9]
    by_int8 = DenseIndex(table, "int8").search(queries, 25)
    by_float32 = DenseIndex(table, "float32").search(queries, 25)
    for (rows8, scores8), (rows32, scores32) in zip(by_int8, by_float32, strict=True):
        np.testing.assert_array_equal(rows8, rows32)
        np.testing.assert_allclose(scores8, scores32, rtol=1e-6, atol=1e-6)
    assert list(by_float32[0][0][:11]) == list(range(9, 20))


@pytest.mark.parametrize("dim", [16, 13, 384])
def test_the_float32_products_stay_within_their_error_bound(dim):
    """The float32 first pass's bound holds against float64 products, for rows of any scale and zeros, and is
    far tighter than the int8 pass's."""
    rng = np.random.default_rng(dim)
    items = rng.normal(size=(500, dim)).astype(np.float32) * rng.lognormal(0, 2, size=(500, 1)).astype(np.float32)
    items[7] = 0.0
    queries = rng.normal(size=(9, dim)).astype(np.float32) * np.float32(20)
    queries[2] = 0.0
    exact = queries.astype(np.float64) @ items.astype(np.float64).T
    bounds = {}
    for mode in ("float32", "int8"):
        quantized = QuantizedItems.of(items, mode)
        approx, factors = quantized.products(queries)
        bounds[mode] = factors.astype(np.float64) @ quantized.slack.astype(np.float64)
        assert np.all(np.abs(approx - exact) <= bounds[mode])
    assert np.all(bounds["float32"] <= bounds["int8"])
    assert np.median(bounds["float32"]) < 0.01 * np.median(bounds["int8"])


def test_the_setting_forces_a_first_pass_and_the_argument_wins(monkeypatch):
    table = np.random.default_rng(0).normal(size=(300, 24)).astype(np.float32)
    monkeypatch.setenv(FIRST_PASS_ENV, "float32")
    forced = DenseIndex(table)
    assert forced.first_pass == "float32" and forced.quantized.codes_t is None and forced.quantized.timings == {}
    monkeypatch.setenv(FIRST_PASS_ENV, "int8")
    assert DenseIndex(table).first_pass == "int8" and DenseIndex(table).quantized.table is None
    assert DenseIndex(table, "float32").first_pass == "float32"
    monkeypatch.setenv(FIRST_PASS_ENV, "fp16")
    with pytest.raises(ValueError, match="int8, float32 or auto, got 'fp16'"):
        DenseIndex(table)
    with pytest.raises(ValueError, match="got 'INT8'"):
        DenseIndex(table, "INT8")


class _Clock:
    """A fake `time.perf_counter`: each product advances it by its pass's cost, nothing else does."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.now, self.costs = 0.0, costs

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize("slower", ["int8", "float32"])
def test_auto_keeps_the_pass_that_measured_faster_and_logs_it(monkeypatch, caplog, slower):
    clock = _Clock({"int8": 1.0, "float32": 1.0, slower: 3.0})
    real_products = QuantizedItems.products

    def timed_products(self, queries):
        clock.now += clock.costs[self.first_pass] * len(queries) ** 0.5
        return real_products(self, queries)

    monkeypatch.setattr(dense, "time", clock)
    monkeypatch.setattr(QuantizedItems, "products", timed_products)
    monkeypatch.delenv(FIRST_PASS_ENV, raising=False)
    n = 2 * MEASURED_ROWS[1]  # a batch is timed on part of the table, one query on all of it
    assert MEASURED_ROWS[0] >= n
    table = np.random.default_rng(1).normal(size=(n, 24)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="ml.search.dense"):
        index = DenseIndex(table)
    faster = "float32" if slower == "int8" else "int8"
    assert index.first_pass == faster
    timings = index.quantized.timings  # the times scaled to the whole table
    for mode, cost in clock.costs.items():
        assert timings[mode] == pytest.approx([cost, cost * MEASURED_BATCHES[1] ** 0.5 * 2])
    assert f"dense first pass over {n} items: {faster}" in caplog.text
    rows, _ = index.search(table[:2], 5)[0]
    np.testing.assert_array_equal(rows, top_k(table[:1] @ table.T, 5)[0])


@pytest.mark.parametrize("first_pass", ["int8", "float32"])
def test_the_head_of_the_table_gives_the_first_products(first_pass):
    rng = np.random.default_rng(4)
    table = rng.normal(size=(700, 20)).astype(np.float32)
    queries = rng.normal(size=(5, 20)).astype(np.float32)
    whole = QuantizedItems.of(table, first_pass)
    approx, factors = whole.products(queries)
    head = whole.head(300)
    head_approx, head_factors = head.products(queries)
    np.testing.assert_allclose(head_approx, approx[:, :300], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(head_factors, factors)
    np.testing.assert_array_equal(head.slack, whole.slack[:, :300])


def test_the_measured_batch_is_the_services_batch():
    assert MEASURED_BATCHES == (1, DEFAULT_MAX_BATCH)


def test_without_the_int8_product_auto_takes_float32_and_forced_int8_fails(monkeypatch, caplog):
    def no_int8_product(*args, **kwargs):
        raise RuntimeError("no int8 matrix product in this build")

    monkeypatch.setattr(torch, "_int_mm", no_int8_product)
    monkeypatch.delenv(FIRST_PASS_ENV, raising=False)
    table = np.random.default_rng(2).normal(size=(500, 16)).astype(np.float32)
    with pytest.raises(RuntimeError, match="no int8 matrix product"):
        QuantizedItems.of(table)  # the recommendation scorers have their own fallbacks
    index = DenseIndex(table)
    assert index.first_pass == "float32" and "no int8 matrix product" in caplog.text
    np.testing.assert_array_equal(index.search(table[:3], 4)[1][0], top_k(table[1:2] @ table.T, 4)[0])
    with pytest.raises(RuntimeError, match="no int8 matrix product"):
        DenseIndex(table, "int8").search(table[:3], 4)
