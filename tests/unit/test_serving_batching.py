"""The recommendation batcher: concurrent requests scored together give exactly the answers scored one by
one, a failing batch fails only its own requests, and a closed batcher refuses new work."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ml.serving import batching, ranking
from ml.serving.batching import BatcherClosedError, RecommendationBatcher
from ml.serving.scorer import Scorer
from tests.unit.test_serving_scorer import tiny_recommender

N_ITEMS = 400


def _champion():
    """The parts of a Champion that `ranking.recommend_many` reads, over a small model's scorer."""
    recommender = tiny_recommender(1.2, n_items=N_ITEMS)
    scorer = Scorer(recommender)
    return SimpleNamespace(
        recommender=recommender,
        rerank=SimpleNamespace(enabled=False),
        fallback_rows=np.argsort(-recommender.item_bias)[:50],
        titles=[f"title {r}" for r in range(N_ITEMS)],
        top_for_histories=scorer.top_many,
    )


def _histories(n: int) -> list[list[str]]:
    rng = np.random.default_rng(1)
    out = [[f"i{r}" for r in rng.integers(0, N_ITEMS, size=int(rng.integers(1, 7)))] for _ in range(n)]
    out[3] = []  # no history: the non-personalized order
    out[5] = ["unknown-item"]  # nothing the model knows: the same
    return out


def test_concurrent_requests_get_the_answers_of_one_by_one_scoring(monkeypatch):
    champion = _champion()
    options = ranking.RankingOptions()
    histories = _histories(40)
    expected = [ranking.recommend(champion, h, k, options) for h, k in zip(histories, [10, 5] * 20, strict=True)]
    seen_batches: list[int] = []
    real = ranking.recommend_many

    def recording(ch, jobs, opts):
        if not seen_batches:  # hold the first batch until every other request is queued behind it
            deadline = time.monotonic() + 10
            while len(batcher._jobs) + len(jobs) < len(histories) and time.monotonic() < deadline:
                time.sleep(0.005)
        seen_batches.append(len(jobs))
        return real(ch, jobs, opts)

    monkeypatch.setattr(batching.ranking, "recommend_many", recording)
    batcher = RecommendationBatcher(max_batch=16)

    async def main():
        return await asyncio.gather(
            *(batcher.recommend(champion, h, k, options) for h, k in zip(histories, [10, 5] * 20, strict=True))
        )

    try:
        got = asyncio.run(main())
    finally:
        batcher.close()
    assert [g.rows for g in got] == [e.rows for e in expected]
    assert [g.explanations for g in got] == [e.explanations for e in expected]
    assert [g.personalized for g in got] == [e.personalized for e in expected]
    assert got[3].personalized is False and got[5].personalized is False
    for g, e in zip(got, expected, strict=True):
        assert g.scores == pytest.approx(e.scores, rel=1e-5, abs=1e-5)
    # the requests waiting together are scored in batches of at most 16, not one by one
    assert sum(seen_batches) == 40 and max(seen_batches) == 16 and len(seen_batches) <= 4
    assert batcher.jobs_done == 40


def test_a_failing_job_fails_alone_and_the_batcher_goes_on(monkeypatch):
    """A batch that fails is scored again one job at a time: only the job that fails alone gets the error."""
    champion = _champion()
    options = ranking.RankingOptions()
    real = ranking.recommend_many

    def poisoned(ch, jobs, opts):
        if any("i13" in history for history, _ in jobs):
            raise ValueError("scoring broke on i13")
        return real(ch, jobs, opts)

    monkeypatch.setattr(batching.ranking, "recommend_many", poisoned)
    batcher = RecommendationBatcher()

    async def main():
        return await asyncio.gather(
            *(batcher.recommend(champion, h, 10, options) for h in (["i1"], ["i13", "i2"], ["i3", "i4"])),
            return_exceptions=True,
        )

    try:
        first, bad, last = asyncio.run(main())
        later = asyncio.run(batcher.recommend(champion, ["i5"], 10, options))
    finally:
        batcher.close()
    assert isinstance(bad, ValueError) and "i13" in str(bad)
    assert first.rows == ranking.recommend(champion, ["i1"], 10, options).rows
    assert last.rows == ranking.recommend(champion, ["i3", "i4"], 10, options).rows
    assert later.personalized and len(later.rows) == 10


def test_close_answers_what_is_queued_and_refuses_new_work():
    champion = _champion()
    options = ranking.RankingOptions()
    batcher = RecommendationBatcher()

    async def main():
        answer = await batcher.recommend(champion, ["i3"], 4, options)
        batcher.close()
        with pytest.raises(BatcherClosedError):
            await batcher.recommend(champion, ["i3"], 4, options)
        return answer

    assert len(asyncio.run(main()).rows) == 4
    assert not any(t.name == "recommendation-batcher" and t.is_alive() for t in threading.enumerate())


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        RecommendationBatcher(max_batch=0)
