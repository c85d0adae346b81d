"""Recommendations scored together: the requests waiting at the same moment share one matrix product.

A shopper's recommendation is dominated by one product of the history vector with the whole item table
(its int8 copy: `ml.search.dense.QuantizedItems`), and that product is bound by reading the table, not by
arithmetic, so one product for a batch of shoppers costs far less than one per shopper
(benchmarks/results/scoring.md). The `RecommendationBatcher` turns
concurrent requests into such batches without making anyone wait for a batch to fill:

- a request hands its job (the champion it took, the shopper's history, k) to the batcher and awaits it;
- one scoring thread takes every job waiting when it is free (at most `max_batch`), scores them with
  `ranking.recommend_many` (one product per champion), and hands each answer back to the event loop;
- while it scores, the event loop goes on parsing requests and reading features, and those requests
  form the next batch. One request alone is scored at once (a batch of one).

The scoring thread spends most of its time in numpy and torch, which release the GIL, so it also runs
beside the event loop on the second core. The answers are exactly those of `ranking.recommend`, one by
one: a batch changes the cost, never the result.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ml.serving import ranking
from ml.serving.champion import Champion

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32


@dataclass
class _Job:
    champion: Champion
    history: Sequence[str]
    k: int
    options: ranking.RankingOptions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class BatcherClosedError(RuntimeError):
    """The batcher was closed (the service is stopping)."""


class RecommendationBatcher:
    """Scores recommendation jobs in batches on one background thread (started on first use)."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # batches scored so far
        self.jobs_done = 0  # jobs answered so far (results and errors)

    async def recommend(
        self, champion: Champion, history: Sequence[str], k: int, options: ranking.RankingOptions
    ) -> ranking.Ranked:
        """What `ranking.recommend(champion, history, k, options)` returns, scored with the other waiting
        requests."""
        loop = asyncio.get_running_loop()
        job = _Job(champion, history, k, options, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the recommendation batcher is closed")
            self._jobs.append(job)
            if self._thread is None:  # started here, not in __init__: the serving process may be a fork
                self._thread = threading.Thread(target=self._run, name="recommendation-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        return await job.future

    def close(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then stop the thread. Later calls raise BatcherClosedError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:  # closed and drained
                    return
                batch, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
            self._score(batch)

    def _score(self, batch: list[_Job]) -> None:
        groups: dict[tuple[int, ranking.RankingOptions], list[_Job]] = {}
        for job in batch:  # a champion swap or other options mid-batch: each group on its own
            groups.setdefault((id(job.champion), job.options), []).append(job)
        settled: list[tuple[_Job, tuple[Any, bool]]] = []
        for jobs in groups.values():
            try:
                outcomes = [(answer, False) for answer in _recommend(jobs)]
            except Exception:  # one bad job must not fail the others: score them one by one
                log.exception("scoring a batch of %d recommendation(s) failed; scoring them one by one", len(jobs))
                outcomes = [_alone(job) for job in jobs]
            settled.extend(zip(jobs, outcomes, strict=True))
        # counted before any answer goes back: a client that has its answer sees it in /healthz
        self.batches += 1
        self.jobs_done += len(batch)
        for job, (answer, failed) in settled:
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, answer, failed)
            except RuntimeError:  # its event loop is closed: nobody waits for this answer any more
                pass


def _recommend(jobs: list[_Job]) -> list[ranking.Ranked]:
    return ranking.recommend_many(jobs[0].champion, [(j.history, j.k) for j in jobs], jobs[0].options)


def _alone(job: _Job) -> tuple[Any, bool]:
    """(answer, False), or (the exception, True) when this job alone fails too."""
    try:
        return _recommend([job])[0], False
    except Exception as err:
        return err, True


def _settle(future: asyncio.Future, answer: Any, failed: bool) -> None:
    if future.done():  # the request was cancelled (client gone)
        return
    if failed:
        future.set_exception(answer)
    else:
        future.set_result(answer)
