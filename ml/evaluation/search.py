"""Search on the hold-out: the served search ranking beside the search baselines, with paired intervals.

A hold-out search case is a search in the hold-out window followed (next event of that shopper) by a click, cart
or purchase: the query as typed (after ingestion's PII scrubbing) -> the item the shopper then chose, ranked
against the whole catalogue. Its history is what the shopper did before (the same point-in-time feature as a
recommendation case), because serving blends a known shopper's history into the query.

Rankers, all on the same cases:
- candidate: the served ranking (`ml.search.engine`: the model's query tower, blended with the history vector,
  fused with BM25), computed by `search_rankings`, the function the gate also runs on the champion;
- baselines (public: catalogue text only): BM25, the zero-shot MiniLM, and their reciprocal rank fusion;
- diagnostic: the model's dense side alone (what the fusion adds), never a bar.

Every ranker goes through `ml.evaluation.compare.compare_rankings`, the recommender's own comparison, so search
gets the same metrics (NDCG@k, recall, MRR, beyond-accuracy, provider exposure) and the same paired bootstrap.
The zero-result rate is the share of cases a ranker returned nothing for (BM25 when no item holds a query word).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml.evaluation import baselines as bl
from ml.search.engine import (
    LexicalIndex,
    SearchEngine,
    SearchSettings,
    dense_top,
    search_texts,
    served_search,
)
from ml.search.fusion import fuse

CASE_ROW = "case_row"  # per-case frame column: the row of the stage's search cases file each measured case came from
BM25, ZERO_SHOT, HYBRID, DENSE_ONLY = (
    "search_bm25",
    "search_zero_shot_minilm",
    "search_hybrid_bm25_minilm",
    "dense_only",
)


def search_rankings(
    rec: Any, cases: pd.DataFrame, k: int, engine: SearchEngine | None = None, dense_only: bool = False
) -> list[list[str]]:
    """The served search ranking (top-k item ids) of a `Recommender` for each case (query, history)."""
    ids, _ = served_search(
        rec,
        cases["query"].astype(str).tolist(),
        [list(h) for h in cases["history"]],
        k,
        engine=engine,
        dense_only=dense_only,
    )
    return ids


def baseline_rankings(
    queries: Sequence[str],
    item_ids: Sequence[str],
    items: pd.DataFrame,
    encode_query: Callable[[Sequence[str]], np.ndarray],
    zero_shot_items: np.ndarray,
    k: int,
    depth: int = 100,
) -> dict[str, list[list[str]]]:
    """BM25, zero-shot MiniLM (query vector . item vector) and their RRF hybrid, top-k item ids per query.

    BM25 reduces English plurals (`ml.lexical.plural_stem`) whatever the candidate's settings: the bar is BM25 as
    a shop's search box would run it, the stronger one on real queries (benchmarks/results/search.md).

    ``encode_query`` is the pretrained encoder, not fine-tuned; ``zero_shot_items`` its item vectors (rows in
    ``item_ids`` order)."""
    lexical = LexicalIndex(search_texts(items)).top(list(queries), max(depth, k))
    vectors = np.asarray(encode_query(list(queries)), dtype=np.float32)
    # [queries, catalogue] scores a batch at a time (bl.BATCH_CELLS), not all queries against a large catalogue
    step = max(1, bl.BATCH_CELLS // max(1, len(zero_shot_items)))
    dense = [
        row
        for lo in range(0, len(vectors), step)
        for row in dense_top(vectors[lo : lo + step] @ zero_shot_items.T, max(depth, k))
    ]
    hybrid = [fuse([d[:depth], lex[:depth]], [1.0, 1.0], k)[0] for d, lex in zip(dense, lexical, strict=True)]
    ids = list(item_ids)
    return {
        BM25: [[ids[r] for r in row[:k]] for row in lexical],
        ZERO_SHOT: [[ids[r] for r in row[:k]] for row in dense],
        HYBRID: [[ids[r] for r in row] for row in hybrid],
    }


def zero_result_rate(rankings: Sequence[Sequence[str]]) -> float:
    return float(np.mean([len(r) == 0 for r in rankings])) if len(rankings) else 0.0


def evaluate_search(
    candidate: Sequence[Sequence[str]],
    baselines: dict[str, list[list[str]]],
    cases: pd.DataFrame,
    k: int,
    *,
    seed: int,
    **common: Any,
) -> dict[str, Any]:
    """`compare_rankings` on the search cases (every baseline public), plus each ranker's zero-result rate."""
    from ml.evaluation.compare import compare_rankings

    compared = compare_rankings(
        candidate, baselines, dict.fromkeys(baselines, bl.PUBLIC), cases, k, seed=seed, **common
    )
    compared["candidate"]["zero_result_rate"] = zero_result_rate(candidate)
    for name, lists in baselines.items():
        compared["baselines"][name]["zero_result_rate"] = zero_result_rate(lists)
    return compared


__all__ = [
    "BM25",
    "DENSE_ONLY",
    "HYBRID",
    "ZERO_SHOT",
    "SearchSettings",
    "baseline_rankings",
    "evaluate_search",
    "search_rankings",
    "zero_result_rate",
]


def search_evaluation(
    rec: Any,
    cases: pd.DataFrame,
    k: int,
    *,
    encode_query: Callable[[Sequence[str]], np.ndarray],
    zero_shot_items: np.ndarray,
    users: pd.DataFrame,
    seed: int,
    **common: Any,
) -> dict[str, Any]:
    """The evaluate stage's search part: the candidate's served ranking and the search baselines on the hold-out
    search cases whose item the model knows. Returns `evaluate_search`'s result (``per_case`` frame included) with
    ``n_cases`` and ``dense_only`` (the model's dense side alone: metrics of what the fusion adds), or, when there is
    no such case, ``{"n_cases": 0, "unmeasurable": why}``."""
    from ml.evaluation.evaluate import audit_groups
    from ml.evaluation.metrics import per_case_metrics, summarize

    kept = np.flatnonzero(cases["item_id"].isin(rec.index_of).to_numpy())
    cases = cases.iloc[kept].reset_index(drop=True)
    if cases.empty:
        return {
            "n_cases": 0,
            "unmeasurable": "the hold-out holds no search followed by a click, cart or purchase of "
            "a catalogue item, so search cannot be measured",
        }
    cases = cases.assign(history=[list(h) for h in cases["history"]])
    candidate = search_rankings(rec, cases, k)
    dense = search_rankings(rec, cases, k, dense_only=True)
    baselines = baseline_rankings(
        cases["query"].astype(str).tolist(),
        rec.item_ids,
        rec.items,
        encode_query,
        zero_shot_items,
        k,
        depth=rec.settings.search.depth,
    )
    out = evaluate_search(candidate, baselines, cases, k, seed=seed, groups=audit_groups(cases, users), **common)
    out["n_cases"] = len(cases)
    out["per_case"].insert(0, CASE_ROW, kept)
    out[DENSE_ONLY] = summarize(per_case_metrics(dense, cases["item_id"].tolist(), k), k)
    return out


def search_metrics(searched: dict[str, Any]) -> dict[str, float]:
    """The run's search metrics under the registry's names: search.<metric> of the candidate (its NDCG@k, recall,
    MRR, zero-result rate, beyond-accuracy and provider exposure), search.dense_only.<metric> and
    search_baseline.<name>.<metric>. Empty when search could not be measured."""
    if not searched.get("n_cases"):
        return {}
    cand = searched["candidate"]
    out = {f"search.{n}": v for n, v in cand["metrics"].items()}
    out["search.zero_result_rate"] = cand["zero_result_rate"]
    out.update({f"search.beyond.{n}": v for n, v in cand["beyond"].items() if v is not None})
    if (cand.get("provider") or {}).get("ratio") is not None:
        out["search.provider_exposure_ratio"] = cand["provider"]["ratio"]
    out.update({f"search.{DENSE_ONLY}.{n}": v for n, v in searched[DENSE_ONLY].items()})
    for name, res in searched["baselines"].items():
        out.update({f"search_baseline.{name}.{n}": v for n, v in res["metrics"].items()})
        out[f"search_baseline.{name}.zero_result_rate"] = res["zero_result_rate"]
    return {n: float(v) for n, v in out.items()}


SEARCH_NDCG, SEARCH_BEST_BASELINE, CHAMPION_SEARCH_NDCG = (
    "search.ndcg_at_10",
    "search.best_baseline_ndcg_at_10",
    "champion.search_ndcg_at_10",
)


def search_gate_evidence(
    per_case: pd.DataFrame, seed: int, best: str, champion_ndcg: Sequence[float] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The gate's search metrics and their paired resamples over the search cases' shoppers: search.ndcg_at_10
    (candidate), search.best_baseline_ndcg_at_10 (``best``) and, with ``champion_ndcg`` (per search case, in the
    cases' order), champion.search_ndcg_at_10. Points are the hold-out's own figures."""
    from ml.evaluation.bootstrap import hold_out
    from ml.evaluation.compare import CANDIDATE, NDCG_PREFIX, per_case_resamples

    series = {
        SEARCH_NDCG: per_case[f"{NDCG_PREFIX}{CANDIDATE}"].to_numpy(),
        SEARCH_BEST_BASELINE: per_case[f"{NDCG_PREFIX}{best}"].to_numpy(),
    }
    if champion_ndcg is not None:
        series[CHAMPION_SEARCH_NDCG] = np.asarray(champion_ndcg, dtype=float)
    resamples = per_case_resamples(per_case, seed)
    itself = hold_out(resamples)
    draws = {key: resamples.means(values) for key, values in series.items()}
    points = {key: float(itself.means(values)[0]) for key, values in series.items()}
    return points, draws
