"""The numpy history path's exact top-n (`HistoryTower.top`): the same items and scores as the full score
of every item followed by a top-n, whatever the closest-similarity weight (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from ml.serving.tower import HistoryTower
from ml.topk import best as _best

N_ITEMS, DIM, MAX_H = 3000, 16, 5


def _tower(w_closest: float, seed: int = 0, transitions: bool = False) -> HistoryTower:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n_cat, n_brand = 7, 40
    return HistoryTower(
        recency=rng.normal(size=MAX_H),
        weight=(np.eye(DIM) + rng.normal(0, 0.1, size=(DIM, DIM))).astype(np.float32),
        bias=rng.normal(0, 0.01, size=DIM).astype(np.float32),
        item_vectors=vectors,
        temperature=0.05,
        content_scale=1.3,
        item_bias=rng.normal(0, 0.5, size=N_ITEMS).astype(np.float32),
        item_category=rng.integers(0, n_cat, size=N_ITEMS),
        item_brand=rng.integers(0, n_brand, size=N_ITEMS),
        category_transition=rng.normal(0, 0.5, size=(n_cat, n_cat)).astype(np.float32),
        feature_weights=np.array([0.4, -1.0, 0.3, 0.2, 0.5, w_closest, 0.7], dtype=np.float32),
        item_tables=(
            (
                (4, sparse.random(N_ITEMS, N_ITEMS, density=0.05, format="csr", dtype=np.float32, rng=rng), 0.6),
                (6, sparse.random(N_ITEMS, N_ITEMS, density=0.05, format="csr", dtype=np.float32, rng=rng), 0.8),
            )
            if transitions
            else ()
        ),
        n_brands=n_brand,
        item_norms=np.linalg.norm(vectors, axis=1),
    )


@pytest.mark.parametrize("w_closest", [0.0, 0.5, 3.0, -2.0, 400.0])
def test_top_is_the_exact_top_of_the_full_score(w_closest):
    tower = _tower(w_closest, transitions=w_closest == 3.0)
    rng = np.random.default_rng(1)
    for length in [1, 3, MAX_H, MAX_H + 4]:
        rows = [int(r) for r in rng.integers(0, N_ITEMS, size=length)]
        full = tower.scores([rows])[0]
        for n in (1, 10, 60):
            expected_rows, expected_scores = _best(np.arange(N_ITEMS), full, n)
            got_rows, got_scores = tower.top(rows, n)
            assert got_rows.tolist() == expected_rows.tolist()
            assert got_scores == pytest.approx(expected_scores, rel=1e-5, abs=1e-4)


def test_top_handles_more_results_than_items_and_a_repeated_item():
    tower = _tower(1.0)
    rows, scores = tower.top([5, 5, 9], N_ITEMS + 10)
    assert sorted(rows.tolist()) == list(range(N_ITEMS))
    assert np.all(np.diff(scores) <= 0)
    full = tower.scores([[5, 5, 9]])[0]
    assert scores == pytest.approx(np.sort(full)[::-1], rel=1e-5, abs=1e-4)


def test_scores_of_a_batch_are_the_scores_of_each_history():
    tower = _tower(2.0)
    histories = [[1, 2, 3], [7], [4, 4, 8, 9, 10, 11, 12]]
    batch = tower.scores(histories)
    for b, rows in enumerate(histories):
        assert batch[b] == pytest.approx(tower.scores([rows])[0], rel=1e-5, abs=1e-4)


def test_the_numpy_path_reproduces_the_torch_model_with_every_feature_on(monkeypatch, caplog):
    """`checked_tower` accepts the numpy path only if it matches the model: with non-zero weights on every
    feature, the item x item tables installed and a content scale, it must still match."""
    import pandas as pd
    import torch

    from ml.serving.tower import checked_tower
    from ml.training.encoder import load_encoder
    from ml.training.model import BiEncoder
    from ml.training.recommender import Recommender, RecommenderSettings

    n = 300
    rng = np.random.default_rng(3)
    items = pd.DataFrame(
        {
            "item_id": [f"i{r}" for r in range(n)],
            "title": [f"item {r}" for r in range(n)],
            "brand": [f"b{r % 13}" for r in range(n)],
            "category": [f"c{r % 5}" for r in range(n)],
        }
    )
    bert, tokenizer = load_encoder()
    model = BiEncoder(
        bert,
        n_items=n,
        trainable_layers=0,
        max_history=MAX_H,
        item_category=torch.as_tensor(np.arange(n) % 5),
        item_brand=torch.as_tensor(np.arange(n) % 13),
    )
    vectors = rng.normal(size=(n, model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with torch.no_grad():
        model.item_table.copy_(torch.from_numpy(vectors))
        model.item_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, size=(n, 1)).astype(np.float32)))
        model.recency.weight.copy_(torch.from_numpy(rng.normal(size=(MAX_H, 1)).astype(np.float32)))
        model.category_transition.weight.normal_(0, 0.5)
        n_features = model.feature_weights.weight.numel()
        model.feature_weights.weight.copy_(torch.linspace(-1.0, 2.0, n_features))
        if hasattr(model, "content_scale"):
            model.content_scale.log_scale.fill_(0.2)
    model.set_transitions(torch.rand(n, n))
    if hasattr(model, "set_lexical"):
        model.set_lexical(torch.rand(n, n))
    settings = RecommenderSettings(temperature=0.05, max_history=MAX_H, max_query_tokens=8, max_item_tokens=8)
    recommender = Recommender(model, tokenizer, items, settings)
    tower = checked_tower(recommender, "test v1")
    assert tower is not None
    assert len(tower.item_tables) == (2 if hasattr(model, "set_lexical") else 1)
    histories = [[1, 2, 3], [7, 7, 250], list(range(40, 40 + MAX_H + 2))]
    expected = recommender.history_scores([[f"i{r}" for r in h] for h in histories])
    for b, rows in enumerate(histories):
        top_rows, top_scores = tower.top(rows, 15)
        assert top_rows.tolist() == np.argsort(-expected[b], kind="stable")[:15].tolist()
        assert top_scores == pytest.approx(np.sort(expected[b])[::-1][:15], rel=1e-5, abs=1e-4)

    def no_int8_product(*args, **kwargs):
        raise RuntimeError("no int8 matrix product in this build")

    monkeypatch.setattr(torch, "_int_mm", no_int8_product)  # the first pass of the served top fails at load:
    assert checked_tower(recommender, "test v1") is None  # the torch model serves instead
    assert "no int8 matrix product" in caplog.text


@pytest.mark.parametrize("w_closest", [0.0, 1.5])
def test_top_of_a_batch_is_the_top_of_each_history(w_closest):
    """One matrix product for several shoppers (`top_many`) changes the cost, not the answers."""
    tower = _tower(w_closest, seed=4)
    rng = np.random.default_rng(5)
    histories = [[int(r) for r in rng.integers(0, N_ITEMS, size=length)] for length in (1, 3, MAX_H, MAX_H + 2, 2)]
    batch = tower.top_many(histories, 25)
    assert len(batch) == len(histories)
    for rows, (got_rows, got_scores) in zip(histories, batch, strict=True):
        want_rows, want_scores = tower.top(rows, 25)
        assert got_rows.tolist() == want_rows.tolist()
        assert got_scores == pytest.approx(want_scores, rel=1e-5, abs=1e-4)
