"""Serving's history scores (`ml.serving.scorer.Scorer`): the model's own score, and an exact top-n whatever
the int8 first pass rounds. A tiny BERT (no download) carries the model's heads; the item table is random."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from ml.search.dense import QuantizedItems
from ml.serving.scorer import Scorer, scorer_for
from ml.topk import best
from ml.training.model import BiEncoder
from ml.training.recommender import Recommender, RecommenderSettings

N_ITEMS, DIM, MAX_H = 3000, 16, 5


def tiny_recommender(
    w_closest: float = 0.5,
    seed: int = 0,
    tables: bool = False,
    n_items: int = N_ITEMS,
    vectors: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    brands: np.ndarray | None = None,
) -> Recommender:
    """A model with every learned part random (feature weights, recency, projection, content scale)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(vocab_size=30, hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    )
    cats = categories if categories is not None else rng.integers(0, 7, size=n_items)
    brand = brands if brands is not None else rng.integers(0, 40, size=n_items)
    model = BiEncoder(
        bert,
        n_items=n_items,
        trainable_layers=0,
        max_history=MAX_H,
        item_category=torch.as_tensor(cats),
        item_brand=torch.as_tensor(brand),
    )
    if vectors is None:
        vectors = rng.normal(size=(n_items, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if bias is None:
        bias = rng.normal(0, 0.5, size=n_items).astype(np.float32)
    with torch.no_grad():
        model.item_table.copy_(torch.from_numpy(vectors))
        model.item_bias.weight.copy_(torch.from_numpy(bias[:, None]))
        model.recency.weight.copy_(torch.from_numpy(rng.normal(size=(MAX_H, 1)).astype(np.float32)))
        model.history_proj.weight.add_(torch.from_numpy(rng.normal(0, 0.1, size=(DIM, DIM)).astype(np.float32)))
        model.category_transition.weight.normal_(0, 0.5)
        model.feature_weights.weight.copy_(torch.tensor([0.4, -1.0, 0.3, 0.2, 0.5, w_closest, 0.7]))
        model.content_scale.log_scale.fill_(0.25)
    if tables:
        model.set_transitions(torch.rand(n_items, n_items))
        model.set_lexical(torch.rand(n_items, n_items))
    items = pd.DataFrame({"item_id": [f"i{r}" for r in range(n_items)], "title": "", "brand": "", "category": ""})
    settings = RecommenderSettings(temperature=0.05, max_history=MAX_H, max_query_tokens=8, max_item_tokens=8)
    return Recommender(model, None, items, settings)


@pytest.mark.parametrize("w_closest", [0.0, 0.5, 3.0, -2.0, 400.0])
def test_top_is_the_exact_top_of_the_models_full_score(w_closest):
    rec = tiny_recommender(w_closest, tables=w_closest == 3.0)
    scorer = Scorer(rec)
    rng = np.random.default_rng(1)
    for length in [1, 3, MAX_H, MAX_H + 4]:
        rows = [int(r) for r in rng.integers(0, N_ITEMS, size=length)]
        full = rec.history_scores([[f"i{r}" for r in rows]])[0]  # what evaluation measures
        np.testing.assert_allclose(scorer.scores([rows])[0], full, rtol=1e-6, atol=1e-6)
        for n in (1, 10, 60):
            expected_rows, expected_scores = best(np.arange(N_ITEMS), full, n)
            got_rows, got_scores = scorer.top_many([rows], n)[0]
            assert got_rows.tolist() == expected_rows.tolist()
            assert got_scores == pytest.approx(expected_scores, rel=1e-5, abs=1e-4)


def test_top_handles_more_results_than_items_and_a_repeated_item():
    scorer = Scorer(tiny_recommender(1.0))
    rows, scores = scorer.top_many([[5, 5, 9]], N_ITEMS + 10)[0]
    assert sorted(rows.tolist()) == list(range(N_ITEMS))
    assert np.all(np.diff(scores) <= 0)
    assert scores == pytest.approx(np.sort(scorer.scores([[5, 5, 9]])[0])[::-1], rel=1e-5, abs=1e-4)


def test_an_empty_history_is_refused():
    with pytest.raises(ValueError, match="at least one item"):
        Scorer(tiny_recommender()).top_many([[]], 10)


@pytest.mark.parametrize("w_closest", [0.0, 1.5])
def test_top_of_a_batch_is_the_top_of_each_history(w_closest):
    """One first-pass product for several shoppers (`top_many`) changes the cost, not the answers."""
    scorer = Scorer(tiny_recommender(w_closest, seed=4))
    rng = np.random.default_rng(5)
    histories = [[int(r) for r in rng.integers(0, N_ITEMS, size=length)] for length in (1, 3, MAX_H, MAX_H + 2, 2)]
    batch = scorer.top_many(histories, 25)
    assert len(batch) == len(histories)
    for rows, (got_rows, got_scores) in zip(histories, batch, strict=True):
        want_rows, want_scores = scorer.top_many([rows], 25)[0]
        assert got_rows.tolist() == want_rows.tolist()
        assert got_scores == pytest.approx(want_scores, rel=1e-5, abs=1e-4)


def test_without_the_int8_product_every_item_is_scored_exactly(monkeypatch, caplog):
    rec = tiny_recommender(2.0, seed=2)
    with_int8 = Scorer(rec).top_many([[1, 2, 3], [7, 7, 250]], 15)

    def no_int8_product(*args, **kwargs):
        raise RuntimeError("no int8 matrix product in this build")

    monkeypatch.setattr(torch, "_int_mm", no_int8_product)
    scorer = scorer_for(rec, "test v1")
    assert scorer.exact_only and "no int8 matrix product" in caplog.text
    for (want_rows, want_scores), (rows, scores) in zip(
        with_int8, scorer.top_many([[1, 2, 3], [7, 7, 250]], 15), strict=True
    ):
        assert rows.tolist() == want_rows.tolist()
        assert scores == pytest.approx(want_scores, rel=1e-5, abs=1e-4)


def _openmp_threads_here() -> int:
    """OpenMP's thread count for the calling thread, from the OpenMP runtime torch runs on."""
    import ctypes
    from pathlib import Path

    runtime = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    if not runtime.exists():
        pytest.skip(f"this torch build has no bundled GNU OpenMP runtime ({runtime})")
    return int(ctypes.CDLL(str(runtime)).omp_get_max_threads())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenMP's default is already one thread on one core")
def test_the_scoring_path_runs_torch_on_one_openmp_thread_in_any_thread():
    """OpenMP's thread count is per thread: a thread torch has not seen starts with one per core, and
    the team's idle member spins on the other core. The serving path sets one thread where it runs."""
    from ml.serving.champion import Champion

    champion = SimpleNamespace(_scorer=Scorer(tiny_recommender()))
    seen: dict[str, int] = {}

    def scoring_thread() -> None:
        seen["before"] = _openmp_threads_here()
        Champion.top_for_histories(champion, [[1, 2, 3], [4]], 10)  # type: ignore[arg-type]
        seen["after"] = _openmp_threads_here()

    thread = threading.Thread(target=scoring_thread)
    thread.start()
    thread.join()
    assert seen["before"] > 1  # the default the service must not run with
    assert seen["after"] == 1


@pytest.mark.parametrize("dim", [16, 13, 384])
def test_the_int8_products_stay_within_their_error_bound(dim):
    """`QuantizedItems`: |approximate - exact| <= the bound, for items and queries of any scale, rows of
    zeros and a width that is not a multiple of 8 (the first pass of `top_many` relies on it)."""
    rng = np.random.default_rng(dim)
    items = rng.normal(size=(500, dim)).astype(np.float32) * rng.lognormal(0, 2, size=(500, 1)).astype(np.float32)
    items[7] = 0.0
    items[8] = 0.0
    items[8, 3] = -4.5  # one non-zero component: exact in int8
    queries = rng.normal(size=(9, dim)).astype(np.float32) * np.float32(20)
    queries[2] = 0.0
    quantized = QuantizedItems.of(items)
    approx, factors = quantized.products(queries)
    exact = queries.astype(np.float64) @ items.astype(np.float64).T
    bound = factors.astype(np.float64) @ quantized.slack.astype(np.float64)
    assert approx.shape == exact.shape == bound.shape
    assert np.all(np.abs(approx - exact) <= bound)
    assert np.all(approx[2] == 0) and np.all(approx[:, 7] == 0)
    # the bound is a bound, not a blanket: well under the products' own size
    assert np.median(bound / (np.abs(exact) + 1e-3)) < 0.5


def near_duplicates_scorer() -> Scorer:
    """400 items a rounding apart at the top of the score, of one category and brand: told apart by their text
    alone, which the first pass cannot resolve (many items need their exact score after it)."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    near = vectors[0] + rng.normal(0, 1e-4, size=(400, DIM)).astype(np.float32)
    vectors[100:500] = near / np.linalg.norm(near, axis=1, keepdims=True)
    bias = rng.normal(0, 0.5, size=N_ITEMS).astype(np.float32)
    bias[100:500] = 3.0  # all at the top, of one category and brand: told apart by their text alone
    categories, brands = rng.integers(0, 7, size=N_ITEMS), rng.integers(0, 40, size=N_ITEMS)
    categories[100:500], brands[100:500] = categories[0], brands[0]
    # no closest-similarity term: only the int8 bound decides what is rescored
    return Scorer(tiny_recommender(0.0, seed=6, vectors=vectors, bias=bias, categories=categories, brands=brands))


def test_top_is_exact_where_the_int8_pass_cannot_tell_items_apart():
    """Items that differ by less than the int8 codes can resolve: the first pass's order among them is
    noise, and the exact pass must still return the exact top (rows and order) of the full score."""
    scorer = near_duplicates_scorer()
    for rows in ([0, 5], [100, 7, 250], [3]):
        full = scorer.scores([rows])[0]
        for n in (1, 10, 60):
            _, want_scores = best(np.arange(N_ITEMS), full, n)
            got_rows, got_scores = scorer.top_many([rows], n)[0]
            # items whose scores differ by a rounding may come in either order; the scores may not
            assert len(set(got_rows.tolist())) == n
            assert got_scores == pytest.approx(want_scores, rel=1e-6, abs=1e-5)
            assert full[got_rows] == pytest.approx(got_scores, rel=1e-6, abs=1e-5)


def test_a_batch_whose_histories_need_different_extra_items_gets_each_exact_top(monkeypatch):
    """After the first candidates, every history's extra items are scored in one padded call: each history still
    gets the exact top of its own full score. The int8 first pass leaves extra items to score here."""
    from ml.search.dense import FIRST_PASS_ENV

    monkeypatch.setenv(FIRST_PASS_ENV, "int8")
    scorer = near_duplicates_scorer()
    calls = []
    exact = scorer._exact

    def counted(q, idx, real, rest, rows):  # noqa: ANN001, ANN202
        calls.append(None if rows is None else tuple(rows.shape))
        return exact(q, idx, real, rest, rows)

    scorer._exact = counted  # type: ignore[method-assign]
    histories = [[0, 5], [100, 7, 250], [3], [250], [9, 11]]
    batch = scorer.top_many(histories, 60)
    # the first candidates of the batch, then the extra items of every history, padded to the most any needs
    assert len(calls) == 2 and calls[1][0] == len(histories)
    for rows, (got_rows, got_scores) in zip(histories, batch, strict=True):
        full = scorer.scores([rows])[0]
        _, want_scores = best(np.arange(N_ITEMS), full, 60)
        assert len(set(got_rows.tolist())) == 60
        assert got_scores == pytest.approx(want_scores, rel=1e-6, abs=1e-5)
        assert full[got_rows] == pytest.approx(got_scores, rel=1e-6, abs=1e-5)
