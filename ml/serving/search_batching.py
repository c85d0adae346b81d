"""Searches answered together: the requests waiting at the same moment share the dense pass and the lexical one.

A search is the query's encoding, one dense top-n over the item table (`ml.search.dense`), BM25's top and their
fusion (`ml.search.engine`). The `SearchBatcher` runs them on one background thread, as
`ml.serving.batching` does for recommendations, with every search waiting when the thread is free:

- each query is encoded on its own (`Champion.query_vectors` of one text): the exported int8 encoder quantizes
  its activations with one scale per tensor, so a query encoded in a padded batch would get another vector
  than alone (and torch's padded batch rounds differently too); one query per pass keeps one vector per query;
- the vectors (blended with each shopper's history vector, as `ranking.search` does) share one dense pass, whose
  int8 first pass reads the item table once for the batch instead of once per query;
- BM25 and the fusion take the batch's queries in one call (`SearchEngine.fuse`).

The encoder (ONNX Runtime or torch) and the dense pass run mostly outside the GIL, so this thread also uses the
second core while the event loop parses requests and reads features. The answers are those of `ranking.search`
one by one: a batch changes the cost, never the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.search.engine import blend_history
from ml.serving import explain, ranking
from ml.serving.batching import Batcher
from ml.serving.champion import Champion, one_openmp_thread


@dataclass(frozen=True)
class _Search:
    champion: Champion
    query: str
    history: Sequence[str]  # the shopper's recent item ids, oldest first (empty: anonymous or opted out)
    k: int
    options: ranking.RankingOptions


class SearchBatcher(Batcher[_Search]):
    """Answers searches in batches on one background thread (started on first use)."""

    thread_name = "search-batcher"
    what = "search"

    async def search(
        self, champion: Champion, query: str, history: Sequence[str], k: int, options: ranking.RankingOptions
    ) -> ranking.Ranked:
        """What `ranking.search(champion, query, history, k, options)` returns, with the other waiting searches."""
        answer: ranking.Ranked = await self._submit(_Search(champion, query, history, k, options))
        return answer

    def _group(self, task: _Search) -> Hashable:
        return id(task.champion), task.options

    def _work(self, tasks: list[_Search]) -> list[Any]:
        return search_many(tasks[0].champion, [(t.query, t.history, t.k) for t in tasks], tasks[0].options)


def search_many(
    champion: Champion, jobs: Sequence[tuple[str, Sequence[str], int]], options: ranking.RankingOptions
) -> list[ranking.Ranked]:
    """`ranking.search` of several (query, history, k) jobs: one encoder pass per query, one dense pass and one
    lexical pass per number of candidates. The same answers as one by one."""
    one_openmp_thread()  # the torch encoder's and the dense pass's products: one thread
    settings = champion.recommender.settings.search
    vectors: list[np.ndarray] = []
    knowns: list[list[int]] = []
    for query, history, _ in jobs:
        vector = champion.query_vectors([query])
        known = ranking.history_rows(champion, history) if settings.history_weight > 0 else []
        if known:
            vector = blend_history(vector, champion.history_vector(known), np.array([True]), settings.history_weight)
        vectors.append(vector)
        knowns.append(known)
    by_n: dict[int, list[int]] = {}
    for j, (_, _, k) in enumerate(jobs):
        by_n.setdefault(ranking.n_candidates(champion, k, options), []).append(j)
    out: list[ranking.Ranked | None] = [None] * len(jobs)
    for n, group in by_n.items():
        rows, _ = champion.search_rows(np.vstack([vectors[j] for j in group]), max(settings.depth, n))
        queries = [jobs[j][0] for j in group]
        for j, (fused_rows, fused_scores) in zip(group, champion.search_engine.fuse(queries, list(rows), n), strict=True):
            out[j] = _explained(champion, jobs[j][0], knowns[j], fused_rows, fused_scores, jobs[j][2])
    return out  # type: ignore[return-value]  # every job was answered above


def _explained(
    champion: Champion, query: str, known: list[int], rows: np.ndarray, scores: np.ndarray, k: int
) -> ranking.Ranked:
    """The fused candidates re-ranked when enabled, cut to k, each explained by the query words its text holds."""
    chosen, chosen_scores = ranking._select(champion, rows, scores, k)
    terms = explain.query_terms(query)
    notes = []
    for r in chosen:
        text = f"{champion.titles[r]} {champion.brands[r]} {champion.categories[r]}"
        notes.append(explain.search_explanation(explain.terms_found(terms, text), personalized=bool(known)))
    return ranking.Ranked(chosen, chosen_scores, notes, personalized=bool(known))
