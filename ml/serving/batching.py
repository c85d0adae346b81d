"""Recommendations scored together: the requests waiting at the same moment share one matrix product.

A shopper's recommendation is dominated by one product of the history vector with the whole item table
(the first pass of `ml.search.dense.QuantizedItems`, int8 or float32), and that product is bound by reading the table, not by
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
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ml.serving import ranking
from ml.serving.champion import Champion

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32

Task = TypeVar("Task")  # what one request asks a batcher for


@dataclass
class Job(Generic[Task]):
    task: Task
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class BatcherClosedError(RuntimeError):
    """The batcher was closed (the service is stopping)."""


class Batcher(Generic[Task]):
    """Answers tasks in batches on one background thread (started on first use): the thread takes every task
    waiting when it is free (at most `max_batch`), answers each group of them (`_group`) with one `_work` call,
    and hands each answer back to its request's event loop. A group whose `_work` fails is answered again one
    task at a time, so only a task that fails alone gets the error."""

    thread_name = "batcher"
    what = "task"  # for messages: what a task is

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._jobs: list[Job[Task]] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # batches answered so far
        self.jobs_done = 0  # tasks answered so far (results and errors)

    def _group(self, task: Task) -> Hashable:
        """Tasks of one batch with equal groups are answered by one `_work` call."""
        raise NotImplementedError

    def _work(self, tasks: list[Task]) -> list[Any]:
        """One answer per task, in order."""
        raise NotImplementedError

    async def _submit(self, task: Task) -> Any:
        loop = asyncio.get_running_loop()
        job = Job(task, loop, loop.create_future())
        self._enqueue(job)
        return await job.future

    def _enqueue(self, job: Job[Task]) -> None:
        """Queue a job (from any thread: a request's, or an earlier stage's); BatcherClosedError once closed."""
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"the {self.thread_name} is closed")
            self._jobs.append(job)
            if self._thread is None:  # started here, not in __init__: the serving process may be a fork
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
            self._cond.notify()

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
            self._answer(batch)

    def _answer(self, batch: list[Job[Task]]) -> None:
        groups: dict[Hashable, list[Job[Task]]] = {}
        for job in batch:  # a champion swap or other options mid-batch: each group on its own
            groups.setdefault(self._group(job.task), []).append(job)
        settled: list[tuple[Job[Task], tuple[Any, bool]]] = []
        for jobs in groups.values():
            try:
                outcomes = [(answer, False) for answer in self._work([j.task for j in jobs])]
            except Exception:  # one bad task must not fail the others: answer them one by one
                log.exception("answering a batch of %d %s(s) failed; answering them one by one", len(jobs), self.what)
                outcomes = [self._alone(job.task) for job in jobs]
            settled.extend(zip(jobs, outcomes, strict=True))
        # counted before any answer goes back: a client that has its answer sees it in /healthz
        self.batches += 1
        self.jobs_done += len(batch)
        for job, (answer, failed) in settled:
            settle(job, answer, failed)

    def _alone(self, task: Task) -> tuple[Any, bool]:
        """(answer, False), or (the exception, True) when this task alone fails too."""
        try:
            return self._work([task])[0], False
        except Exception as err:
            return err, True


@dataclass(frozen=True)
class _Recommendation:
    champion: Champion
    history: Sequence[str]
    k: int
    options: ranking.RankingOptions


class RecommendationBatcher(Batcher[_Recommendation]):
    """Scores recommendation jobs in batches on one background thread (started on first use)."""

    thread_name = "recommendation-batcher"
    what = "recommendation"

    async def recommend(
        self, champion: Champion, history: Sequence[str], k: int, options: ranking.RankingOptions
    ) -> ranking.Ranked:
        """What `ranking.recommend(champion, history, k, options)` returns, scored with the other waiting
        requests."""
        answer: ranking.Ranked = await self._submit(_Recommendation(champion, history, k, options))
        return answer

    def _group(self, task: _Recommendation) -> Hashable:
        return id(task.champion), task.options

    def _work(self, tasks: list[_Recommendation]) -> list[Any]:
        return ranking.recommend_many(tasks[0].champion, [(t.history, t.k) for t in tasks], tasks[0].options)


def settle(job: Job[Any], answer: Any, failed: bool) -> None:
    """Hand `answer` (an exception when `failed`) to the job's request, on its event loop."""
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, answer, failed)
    except RuntimeError:  # its event loop is closed: nobody waits for this answer any more
        pass


def _settle(future: asyncio.Future, answer: Any, failed: bool) -> None:
    if future.done():  # the request was cancelled (client gone)
        return
    if failed:
        future.set_exception(answer)
    else:
        future.set_result(answer)
