"""The search batcher: concurrent searches answered together give exactly the answers of `ranking.search` one by
one (rows, scores and explanations), each query is encoded alone, and a search that fails (in either stage) fails
alone."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from types import MethodType, SimpleNamespace

import numpy as np
import pytest

from ml.search.dense import DenseIndex
from ml.search.engine import SearchEngine, SearchSettings
from ml.serving import ranking, search_batching
from ml.serving.batching import BatcherClosedError
from ml.serving.champion import Champion
from ml.serving.scorer import Scorer
from ml.serving.search_batching import SearchBatcher, search_many
from tests.unit.test_serving_scorer import tiny_recommender

N_ITEMS, DIM = 3000, 16  # large enough for the dense index's int8 first pass (depth 100 of 3,000 rows)
WORDS = ["red", "blue", "steel", "wool", "mug", "lamp", "jacket", "kettle", "desk", "warm", "kids", "gift"]


class OneQueryEncoder:
    """A deterministic stand-in for the query encoder: a text's vector from its words; refuses batches, as serving
    must never encode queries together (the int8 encoder's vector of a query would depend on its neighbours)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, queries: list[str]) -> np.ndarray:
        assert len(queries) == 1, f"queries encoded together: {queries}"
        if "explode" in queries[0]:
            raise RuntimeError("the encoder broke")
        self.calls += 1
        vector = np.zeros(DIM, dtype=np.float64)
        for word in queries[0].lower().split():
            vector += np.random.default_rng(zlib.crc32(word.encode())).normal(size=DIM)
        vector += 1e-3 * np.random.default_rng(len(queries[0])).normal(size=DIM)
        return (vector / np.linalg.norm(vector)).astype(np.float32)[None, :]


def _champion():
    """A champion of the parts search reads: the scorer of a tiny model with these item vectors, the dense index over the augmented item
    vectors, BM25 over item texts; `query_vectors`, `search_rows` and `history_vector` are Champion's own."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bias = rng.normal(0, 0.3, size=N_ITEMS).astype(np.float32)
    rng_parts = np.random.default_rng(2)
    scorer = Scorer(
        tiny_recommender(
            vectors=vectors,
            bias=bias,
            categories=rng_parts.integers(0, 5, size=N_ITEMS),
            brands=rng_parts.integers(0, 20, size=N_ITEMS),
            n_items=N_ITEMS,
        )
    )
    ids = [f"i{r}" for r in range(N_ITEMS)]
    titles = [f"{WORDS[r % 12]} {WORDS[(r // 12) % 12]} item {r}" for r in range(N_ITEMS)]
    brands = [f"brand{r % 20}" for r in range(N_ITEMS)]
    categories = [f"cat{r % 5}" for r in range(N_ITEMS)]
    settings = SimpleNamespace(temperature=0.05, max_history=4, search=SearchSettings())
    encoder = OneQueryEncoder()
    recommender = SimpleNamespace(
        item_ids=ids,
        index_of={i: r for r, i in enumerate(ids)},
        item_vectors=vectors,
        item_bias=bias,
        settings=settings,
        query_vectors=encoder,
        augmented_queries=lambda v: np.hstack([v / 0.05, np.ones((len(v), 1))]).astype(np.float32),
    )
    texts = [f"{t} {b} {c}" for t, b, c in zip(titles, brands, categories, strict=True)]
    from ml.search.engine import LexicalIndex

    champion = SimpleNamespace(
        recommender=recommender,
        _scorer=scorer,
        rerank=SimpleNamespace(enabled=False),
        dense=DenseIndex(np.hstack([vectors, bias[:, None]])),
        search_engine=SearchEngine(LexicalIndex(texts), settings.search),
        titles=titles,
        brands=brands,
        categories=categories,
        encoder=encoder,
    )
    for name in ("query_vectors", "search_rows", "history_vector"):
        setattr(champion, name, MethodType(getattr(Champion, name), champion))
    return champion


def _jobs(n: int) -> list[tuple[str, list[str], int]]:
    """Queries of catalogue words and others, anonymous and with histories (known, empty, unknown), varied k."""
    rng = np.random.default_rng(1)
    out = []
    for j in range(n):
        words = [WORDS[int(w)] for w in rng.integers(0, len(WORDS), size=int(rng.integers(1, 4)))]
        if j % 4 == 1:
            words.append(f"zzz{j}")  # a word no item holds
        history = [f"i{r}" for r in rng.integers(0, N_ITEMS, size=int(rng.integers(0, 6)))]
        if j % 7 == 3:
            history = ["unknown-item"]
        out.append((" ".join(words), history, [10, 5, 20][j % 3]))
    return out


def _same(got: ranking.Ranked, expected: ranking.Ranked) -> None:
    assert got.rows == expected.rows
    assert got.scores == expected.scores  # exactly: a batch changes the cost, never the result
    assert got.explanations == expected.explanations
    assert got.personalized == expected.personalized


def test_search_many_gives_the_answers_of_ranking_search_one_by_one():
    champion = _champion()
    options = ranking.RankingOptions()
    jobs = _jobs(120)
    expected = [ranking.search(champion, q, h, k, options) for q, h, k in jobs]
    calls = champion.encoder.calls
    got = search_many(champion, jobs, options)
    assert champion.encoder.calls - calls == len(jobs)  # one encoder pass per query
    for g, e in zip(got, expected, strict=True):
        _same(g, e)
    assert any(g.personalized for g in got) and not all(g.personalized for g in got)
    assert {len(g.rows) for g in got} == {5, 10, 20}


def test_concurrent_searches_are_answered_in_batches_with_the_answers_of_one_by_one(monkeypatch):
    champion = _champion()
    options = ranking.RankingOptions()
    jobs = _jobs(40)
    expected = [ranking.search(champion, q, h, k, options) for q, h, k in jobs]
    seen_batches: list[int] = []
    real = search_batching.rank_many

    def recording(ch, batch, opts):
        if not seen_batches:  # hold the first ranking batch until every other search is encoded and queued
            deadline = time.monotonic() + 10
            while len(batcher.ranking._jobs) + len(batch) < len(jobs) and time.monotonic() < deadline:
                time.sleep(0.005)
        seen_batches.append(len(batch))
        return real(ch, batch, opts)

    monkeypatch.setattr(search_batching, "rank_many", recording)
    batcher = SearchBatcher(max_batch=16)

    async def main():
        return await asyncio.gather(*(batcher.search(champion, q, h, k, options) for q, h, k in jobs))

    try:
        got = asyncio.run(main())
    finally:
        batcher.close()
    for g, e in zip(got, expected, strict=True):
        _same(g, e)
    assert sum(seen_batches) == 40 and max(seen_batches) == 16 and len(seen_batches) <= 4
    assert batcher.jobs_done == batcher.ranking.jobs_done == 40
    assert champion.encoder.calls >= 40  # one pass per query (and one per expected answer above)


def test_a_failing_search_fails_alone_and_the_batcher_goes_on(monkeypatch):
    """A search whose encoding fails gets its error alone; a ranking batch that fails is ranked again one search at
    a time, so only the search that fails alone gets the error."""
    champion = _champion()
    options = ranking.RankingOptions()
    real = search_batching.rank_many

    def poisoned(ch, batch, opts):
        if any("poison" in search.query for search in batch):
            raise ValueError("ranking broke on a poisoned query")
        return real(ch, batch, opts)

    monkeypatch.setattr(search_batching, "rank_many", poisoned)
    batcher = SearchBatcher()
    queries = ("red mug", "poison lamp", "wool jacket", "explode desk", "kids gift")

    async def main():
        return await asyncio.gather(
            *(batcher.search(champion, q, [], 10, options) for q in queries), return_exceptions=True
        )

    try:
        first, bad, third, exploded, last = asyncio.run(main())
        later = asyncio.run(batcher.search(champion, "steel desk", ["i3"], 10, options))
    finally:
        batcher.close()
    assert isinstance(bad, ValueError) and "poisoned" in str(bad)
    assert isinstance(exploded, RuntimeError) and "encoder broke" in str(exploded)
    for query, got in [("red mug", first), ("wool jacket", third), ("kids gift", last)]:
        _same(got, ranking.search(champion, query, [], 10, options))
    assert later.personalized and len(later.rows) == 10


def test_a_closed_search_batcher_refuses_new_work():
    champion = _champion()
    options = ranking.RankingOptions()
    batcher = SearchBatcher()

    async def main():
        answer = await batcher.search(champion, "red mug", [], 4, options)
        batcher.close()
        with pytest.raises(BatcherClosedError):
            await batcher.search(champion, "red mug", [], 4, options)
        return answer

    assert len(asyncio.run(main()).rows) == 4
    assert not any(t.name.startswith("search-") and t.is_alive() for t in threading.enumerate())
