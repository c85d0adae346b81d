"""From a champion and a shopper's inputs to k explained results (no HTTP, no stores).

- recommendations: the top of the model's full score over every item for the shopper's recent items
  (the history tower's similarity, the item bias and the behavioural part: `Recommender.history_scores`,
  the same function the evaluation measured; its exact top-n by `Champion.top_for_histories`, which runs the
  model's own parts in `ml.serving.scorer`); without usable history, the non-personalized order (the model's learned
  item bias, trained under DP, so no extra privacy cost);
- search: the ranking the evaluation measured (`ml.search.engine`): the query's vector, blended with a known
  shopper's history vector, its dense top (`ml.search.dense`) fused with BM25's by reciprocal rank fusion, with the model's own
  search settings (`RecommenderSettings.search`);
- fair re-ranking (when the version's tags turn it on): `ml.evaluation.rerank.rerank` over
  `candidates_factor * k` candidates, the same function the evaluation measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.evaluation.rerank import rerank
from ml.search.engine import blend_history
from ml.serving import explain
from ml.serving.champion import Champion
from ml.serving.runtime import one_openmp_thread


@dataclass(frozen=True)
class RankingOptions:
    candidates_factor: int = 3  # with re-ranking on, this many candidates per result slot (at least k + 20)

    def __post_init__(self) -> None:
        if self.candidates_factor < 1:
            raise ValueError(f"candidates_factor must be at least 1, got {self.candidates_factor}")


@dataclass(frozen=True)
class Ranked:
    rows: list[int]  # item rows of the champion's catalogue, best first
    scores: list[float]
    explanations: list[str]
    personalized: bool


def n_candidates(champion: Champion, k: int, options: RankingOptions) -> int:
    if not champion.rerank.enabled:
        return k
    return max(k * options.candidates_factor, k + 20)


def _select(champion: Champion, rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Drop padding rows (-1), re-rank when enabled, keep k."""
    keep = rows >= 0
    rows, scores = rows[keep], scores[keep]
    if not champion.rerank.enabled:
        return [int(r) for r in rows[:k]], [float(s) for s in scores[:k]]
    ids = champion.recommender.item_ids
    candidates = [ids[int(r)] for r in rows]
    by_id = {item: (int(r), float(s)) for item, r, s in zip(candidates, rows, scores, strict=True)}
    chosen = rerank(candidates, scores.tolist(), champion.rerank.is_tail, k, champion.rerank.config)
    return [by_id[i][0] for i in chosen], [by_id[i][1] for i in chosen]


def history_rows(champion: Champion, history: Sequence[str]) -> list[int]:
    """Rows of the history items this model knows, oldest first (items new since training are skipped)."""
    index_of = champion.recommender.index_of
    return [index_of[i] for i in history if i in index_of]


def popular(champion: Champion, k: int, options: RankingOptions) -> Ranked:
    rows = champion.fallback_rows[: n_candidates(champion, k, options)]
    scores = champion.recommender.item_bias[rows]
    chosen, chosen_scores = _select(champion, rows, scores, k)
    return Ranked(chosen, chosen_scores, [explain.NOT_PERSONALIZED] * len(chosen), personalized=False)


def recommend(champion: Champion, history: Sequence[str], k: int, options: RankingOptions) -> Ranked:
    """Personalized when the shopper has history the model knows; otherwise the non-personalized order."""
    return recommend_many(champion, [(history, k)], options)[0]


def recommend_many(
    champion: Champion, jobs: Sequence[tuple[Sequence[str], int]], options: RankingOptions
) -> list[Ranked]:
    """`recommend` of several (history, k) jobs; the personalized ones share one matrix product per
    number of candidates (`Champion.top_for_histories`). The same answers as one by one."""
    out: list[Ranked | None] = [None] * len(jobs)
    by_n: dict[int, list[tuple[int, list[int]]]] = {}
    for j, (history, k) in enumerate(jobs):
        known = history_rows(champion, history)
        if known:
            by_n.setdefault(n_candidates(champion, k, options), []).append((j, known))
        else:
            out[j] = popular(champion, k, options)
    for n, group in by_n.items():
        tops = champion.top_for_histories([known for _, known in group], n)
        for (j, known), (rows, scores) in zip(group, tops, strict=True):
            out[j] = _personalized(champion, known, rows, scores, jobs[j][1])
    return out  # type: ignore[return-value]  # every job was answered above


def _personalized(champion: Champion, known: list[int], rows: np.ndarray, scores: np.ndarray, k: int) -> Ranked:
    rec = champion.recommender
    chosen, chosen_scores = _select(champion, rows, scores, k)
    matched = explain.best_history_match(rec.item_vectors, known[-rec.settings.max_history :], chosen) if chosen else []
    notes = [explain.history_explanation(r, m, champion.titles[m]) for r, m in zip(chosen, matched, strict=True)]
    return Ranked(chosen, chosen_scores, notes, personalized=True)


def search(champion: Champion, query: str, history: Sequence[str], k: int, options: RankingOptions) -> Ranked:
    """The model's search ranking: the query's vector (blended with the shopper's history vector when the model's
    `history_weight` is above 0 and the shopper has history it knows), the dense top fused with BM25's."""
    one_openmp_thread()  # the query encoder's forward pass: one thread per request
    settings = champion.recommender.settings.search
    vector = champion.query_vectors([query])
    known = history_rows(champion, history) if settings.history_weight > 0 else []
    if known:
        vector = blend_history(vector, champion.history_vector(known), np.array([True]), settings.history_weight)
    n = n_candidates(champion, k, options)
    rows, _ = champion.search_rows(vector, max(settings.depth, n))
    fused_rows, fused_scores = champion.search_engine.fuse([query], [rows[0]], n)[0]
    chosen, chosen_scores = _select(champion, fused_rows, fused_scores, k)
    terms = explain.query_terms(query)
    notes = []
    for r in chosen:
        text = f"{champion.titles[r]} {champion.brands[r]} {champion.categories[r]}"
        notes.append(
            explain.search_explanation(
                explain.terms_found(terms, text, settings.stem_plurals), personalized=bool(known)
            )
        )
    return Ranked(chosen, chosen_scores, notes, personalized=bool(known))
