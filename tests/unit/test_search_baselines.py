"""The search baselines score the zero-shot side a batch of queries at a time: the same rankings in any batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import baselines as bl
from ml.evaluation.search import BM25, HYBRID, ZERO_SHOT, baseline_rankings


def test_baseline_rankings_are_the_same_whatever_the_batch_of_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    words = ["red", "blue", "hat", "cup", "tent", "stove", "wool", "steel"]
    items = pd.DataFrame({"title": [" ".join(rng.choice(words, size=3)) for _ in range(30)]})
    item_ids = [f"i{j}" for j in range(30)]
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    queries = [" ".join(rng.choice(words, size=2)) for _ in range(9)]
    table = {q: rng.normal(size=8).astype(np.float32) for q in set(queries)}

    def encode(qs: list[str]) -> np.ndarray:
        return np.stack([table[q] for q in qs])

    whole = baseline_rankings(queries, item_ids, items, encode, vectors, k=5)
    monkeypatch.setattr(bl, "BATCH_CELLS", 2 * 30)  # two queries per batch
    batched = baseline_rankings(queries, item_ids, items, encode, vectors, k=5)
    assert batched == whole
    best = [[item_ids[j] for j in np.argsort(-(table[q] @ vectors.T), kind="stable")[:5]] for q in queries]
    assert whole[ZERO_SHOT] == best
    assert len(whole[BM25]) == len(whole[HYBRID]) == len(queries)
