"""Searches answered together: the query encoder on its own thread, then one dense and one lexical pass for the
searches waiting at the same moment.

A search is the query's encoding, one dense top-n over the item table (`ml.search.dense`), BM25's top and their
fusion (`ml.search.engine`). The `SearchBatcher` runs them on two background threads, a pipeline:

- the encoder stage takes the searches in arrival order and encodes each query on its own (`Champion.query_vectors`
  of one text; blended with the shopper's history vector as `ranking.search` does): the exported int8 encoder
  quantizes its activations with one scale per tensor, so a query encoded in a padded batch would get another
  vector than alone (and torch's padded batch rounds differently too); one query per pass keeps one vector per
  query. Each encoded search goes on to the ranking stage at once;
- the ranking stage takes every encoded search waiting when it is free (`ml.serving.batching.Batcher`), and gives
  them one dense pass (whose int8 first pass reads the item table once for the batch) and one lexical pass
  (`SearchEngine.fuse`), then explains each answer.

While the encoder runs one query (ONNX Runtime or torch, outside the GIL), the ranking stage ranks the queries
before it, and the event loop parses requests and reads features: the three share the machine's cores instead of
one thread doing each search from start to end. The answers are those of `ranking.search` one by one
(`search_many` is the two stages in one call): a batch changes the cost, never the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.search.engine import blend_history
from ml.serving import explain, ranking
from ml.serving.batching import DEFAULT_MAX_BATCH, Batcher, Job, settle
from ml.serving.champion import Champion, one_openmp_thread


@dataclass(frozen=True)
class _Search:
    champion: Champion
    query: str
    history: Sequence[str]  # the shopper's recent item ids, oldest first (empty: anonymous or opted out)
    k: int
    options: ranking.RankingOptions


@dataclass(frozen=True)
class Encoded:
    """A search with its query's vector (blended with the shopper's history vector when the model blends one)."""

    query: str
    vector: np.ndarray  # [1, D]
    personalized: bool  # the vector holds the shopper's history
    k: int


@dataclass(frozen=True)
class _Ranking:
    champion: Champion
    encoded: Encoded
    options: ranking.RankingOptions


class _RankingStage(Batcher[_Ranking]):
    """The dense and lexical passes of the encoded searches waiting together."""

    thread_name = "search-ranking"
    what = "search"

    def _group(self, task: _Ranking) -> Hashable:
        return id(task.champion), task.options

    def _work(self, tasks: list[_Ranking]) -> list[Any]:
        return rank_many(tasks[0].champion, [t.encoded for t in tasks], tasks[0].options)


class SearchBatcher(Batcher[_Search]):
    """Answers searches on two background threads (started on first use): the encoder stage (this batcher's
    thread), which hands each encoded search to the ranking stage (`_RankingStage`'s thread)."""

    thread_name = "search-encoder"
    what = "search"

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        super().__init__(max_batch)
        self.ranking = _RankingStage(max_batch)

    async def search(
        self, champion: Champion, query: str, history: Sequence[str], k: int, options: ranking.RankingOptions
    ) -> ranking.Ranked:
        """What `ranking.search(champion, query, history, k, options)` returns, with the other waiting searches."""
        answer: ranking.Ranked = await self._submit(_Search(champion, query, history, k, options))
        return answer

    def _answer(self, batch: list[Job[_Search]]) -> None:
        """Encode each search, and hand it to the ranking stage at once; a search whose encoding fails gets the
        error alone."""
        for job in batch:
            task = job.task
            try:
                encoded = encode(task.champion, task.query, task.history, task.k)
                self.ranking._enqueue(Job(_Ranking(task.champion, encoded, task.options), job.loop, job.future))
            except Exception as err:
                settle(job, err, True)
        self.batches += 1
        self.jobs_done += len(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Encode what is queued, rank it, then stop both threads. Later calls raise BatcherClosedError."""
        super().close(timeout)
        self.ranking.close(timeout)


def encode(champion: Champion, query: str, history: Sequence[str], k: int) -> Encoded:
    """The query's vector as `ranking.search` computes it: encoded alone, blended with the shopper's history
    vector when the model's `history_weight` is above 0 and the shopper has history it knows."""
    one_openmp_thread()  # the torch encoder's forward pass: one thread
    settings = champion.recommender.settings.search
    vector = champion.query_vectors([query])
    known = ranking.history_rows(champion, history) if settings.history_weight > 0 else []
    if known:
        vector = blend_history(vector, champion.history_vector(known), np.array([True]), settings.history_weight)
    return Encoded(query, vector, bool(known), k)


def rank_many(champion: Champion, searches: Sequence[Encoded], options: ranking.RankingOptions) -> list[ranking.Ranked]:
    """The ranked answer of each encoded search: one dense pass and one lexical pass per number of candidates."""
    one_openmp_thread()  # the dense pass's integer product runs in torch: one thread
    depth = champion.recommender.settings.search.depth
    by_n: dict[int, list[int]] = {}
    for j, search in enumerate(searches):
        by_n.setdefault(ranking.n_candidates(champion, search.k, options), []).append(j)
    out: list[ranking.Ranked | None] = [None] * len(searches)
    for n, group in by_n.items():
        rows, _ = champion.search_rows(np.vstack([searches[j].vector for j in group]), max(depth, n))
        queries = [searches[j].query for j in group]
        for j, (fused_rows, fused_scores) in zip(
            group, champion.search_engine.fuse(queries, list(rows), n), strict=True
        ):
            out[j] = _explained(champion, searches[j], fused_rows, fused_scores)
    return out  # type: ignore[return-value]  # every search was answered above


def search_many(
    champion: Champion, jobs: Sequence[tuple[str, Sequence[str], int]], options: ranking.RankingOptions
) -> list[ranking.Ranked]:
    """`ranking.search` of several (query, history, k) jobs, as the two stages answer them: each query encoded
    alone, then one dense and one lexical pass per number of candidates. The same answers as one by one."""
    return rank_many(champion, [encode(champion, q, h, k) for q, h, k in jobs], options)


def _explained(champion: Champion, search: Encoded, rows: np.ndarray, scores: np.ndarray) -> ranking.Ranked:
    """The fused candidates re-ranked when enabled, cut to k, each explained by the query words its text holds."""
    chosen, chosen_scores = ranking._select(champion, rows, scores, search.k)
    terms = explain.query_terms(search.query)
    notes = []
    for r in chosen:
        text = f"{champion.titles[r]} {champion.brands[r]} {champion.categories[r]}"
        notes.append(
            explain.search_explanation(
                explain.terms_found(terms, text, champion.recommender.settings.search.stem_plurals),
                personalized=search.personalized,
            )
        )
    return ranking.Ranked(chosen, chosen_scores, notes, personalized=search.personalized)
