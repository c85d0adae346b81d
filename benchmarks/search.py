"""Search on real queries (Crowdflower) and on the synthetic shop's hold-out, and the fusion's lexical weight.

    python benchmarks/search.py               # seeds 7, 8 and 9
    python benchmarks/search.py --seeds 7

Each seed runs the chain's ingest, features, train and evaluate stages with the demo's defaults (`vetted demo`:
the synthetic shop, `RunConfig()` but for the seed), so the model learns query -> item from the shop's search logs
as shipped. Then, for that model:

- Crowdflower (`ml.data.crowdflower`; evaluation data only, nothing trains on it), both protocols: retrieval from
  all of the file's products (unjudged = not relevant) and re-ranking of each query's judged products
  (`ml.evaluation.judged`). Methods: BM25, the zero-shot MiniLM and their RRF hybrid (the chain's search baselines,
  `ml.evaluation.search.baseline_rankings`), the model's query tower alone (dense only) and the served ranking
  (`ml.search.engine.served_search`, as shipped). The model never saw these products: its own item tower encodes
  their text and their item bias is 0 (nothing was learned about them). Intervals: paired bootstrap over queries.
- The synthetic hold-out's search cases: the evaluate stage's own search table (`ml.evaluation.search`), intervals
  over shoppers.
- A sweep of `SearchSettings.lexical_weight` of the served fusion, on Crowdflower retrieval and on the synthetic
  hold-out, each weight against the best one on the same resamples.

Writes benchmarks/results/search.json and search.md.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, new_context, write  # noqa: E402
from report_search import (  # noqa: E402
    BM25,
    BM25_PLURALS,
    CROWDFLOWER_METHODS,
    DENSE,
    HYBRID,
    SERVED,
    ZERO_SHOT,
    markdown,
)

log = logging.getLogger("benchmarks.search")
K = 10
DEEP = 100  # retrieval lists are taken this deep for Recall@100 (the fusion's default depth)
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


class CachedQueries:
    """A `Recommender` whose query vectors are computed once per query text (the sweep ranks the same queries
    five times); everything else is the recommender's own."""

    def __init__(self, rec: Any) -> None:
        self._rec, self._cache = rec, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rec, name)

    def query_vectors(self, queries: list[str]) -> np.ndarray:
        new = sorted({q for q in queries if q not in self._cache})
        if new:
            self._cache.update(zip(new, self._rec.query_vectors(new), strict=True))
        return np.vstack([self._cache[q] for q in queries])


def over_products(rec: Any, items: pd.DataFrame) -> Any:
    """The model's search side over products it never saw: its item tower encodes their text (title and the start
    of the description), their bias is 0. For anonymous search only (no history: its tables are the shop's)."""
    from ml.training.encoder import item_texts

    view = copy.copy(rec)
    view.items = items.reset_index(drop=True)
    view.item_ids = view.items["item_id"].astype(str).tolist()
    view.index_of = {i: r for r, i in enumerate(view.item_ids)}
    view.item_vectors = (
        rec.model.encode_texts(rec.tokenizer, item_texts(view.items), rec.settings.max_item_tokens)
        .numpy()
        .astype(np.float32)
    )
    view.item_bias = np.zeros(len(view.items), dtype=np.float32)
    view._search_engine = None
    return view


def train(seed: int) -> tuple[Any, dict[str, float]]:
    """The demo's chain up to evaluate, for one seed; returns the run context and each stage's seconds."""
    from ml.pipeline import stages

    ctx = new_context(f"search-seed{seed}", {"seed": seed})
    seconds = {}
    for stage in ("ingest", "features", "train", "evaluate"):
        start = time.perf_counter()
        getattr(stages, stage)(ctx)
        seconds[stage] = round(time.perf_counter() - start, 1)
        log.info("seed %d: %s done in %.1f s", seed, stage, seconds[stage])
    return ctx, seconds


def per_query(rankings: dict[str, list[list[str]]], grades: list[dict[str, int]], deep: bool) -> dict[str, Any]:
    """Per method, each query's ndcg, rr and recall at K (and recall at DEEP for retrieval lists)."""
    from ml.evaluation.judged import query_metrics

    out: dict[str, Any] = {}
    for name, lists in rankings.items():
        rows = [query_metrics(r, g, K) for r, g in zip(lists, grades, strict=True)]
        out[name] = {m: [row[m] for row in rows] for m in ("ndcg", "rr", "recall")}
        if deep:
            out[name]["recall_deep"] = [query_metrics(r, g, DEEP)["recall"] for r, g in zip(lists, grades, strict=True)]
    return out


def summarize(values: dict[str, Any], queries: list[str], seed: int) -> dict[str, Any]:
    """For each metric, every method's mean and served - method with paired intervals over queries."""
    from ml.evaluation.judged import paired_summary

    metrics = list(next(iter(values.values())))
    return {m: paired_summary({n: values[n][m] for n in values}, queries, seed, SERVED) for m in metrics}


def crowdflower(rec: Any, zero_shot: Any, seed: int) -> dict[str, Any]:
    from ml.data.crowdflower import load_judgments
    from ml.evaluation.judged import fused_within, order_within, paired_summary
    from ml.evaluation.search import baseline_rankings
    from ml.search.engine import LexicalIndex, SearchEngine, search_texts, served_search
    from ml.training.encoder import item_texts

    judged = load_judgments(SHARED_DATA / "crowdflower-search")
    p = judged.products
    items = pd.DataFrame(
        {"item_id": p["product_id"], "title": p["title"], "description": p["description"], "brand": "", "category": ""}
    )
    queries = judged.queries
    grades = [
        dict(zip(part["product_id"], part["grade"], strict=True))
        for _, part in judged.judged.groupby("query", sort=True)
    ]
    settings = rec.settings.search
    start = time.perf_counter()
    view = CachedQueries(over_products(rec, items))
    zs_items = zero_shot(item_texts(items), rec.settings.max_item_tokens)
    zs_queries = zero_shot(queries, rec.settings.max_query_tokens)
    none: list[list[str]] = [[] for _ in queries]

    # retrieval: every product of the file
    retrieval = baseline_rankings(
        queries,
        view.item_ids,
        items,
        lambda q: zero_shot(q, rec.settings.max_query_tokens),
        zs_items,
        DEEP,
        depth=settings.depth,
    )
    retrieval[SERVED] = served_search(view, queries, none, DEEP)[0]
    retrieval[DENSE] = served_search(view, queries, none, DEEP, dense_only=True)[0]
    plain = LexicalIndex(search_texts(items), stem_plurals=False)  # BM25 on the words as written, for comparison
    retrieval[BM25_PLURALS] = [[view.item_ids[r] for r in rows] for rows in plain.top(queries, DEEP)]
    dense_is_zero_shot = retrieval[DENSE] == retrieval[ZERO_SHOT]

    # re-ranking: each query's judged products only
    row_of = view.index_of
    dense_scores = view.scores(view.query_vectors(queries))
    zs_scores = zs_queries @ zs_items.T
    bm25_scores = LexicalIndex(search_texts(items)).scores(queries)  # the BM25 baseline's (plurals reduced)
    plain_scores = plain.scores(queries)
    served_lexical = bm25_scores if settings.stem_plurals else plain_scores
    orders: dict[str, list[list[str]]] = {n: [] for n in CROWDFLOWER_METHODS}
    for q, g in enumerate(grades):
        rows = [row_of[i] for i in g]
        orders[BM25].append(order_within(bm25_scores[q], rows))
        orders[BM25_PLURALS].append(order_within(plain_scores[q], rows))
        orders[ZERO_SHOT].append(order_within(zs_scores[q], rows))
        orders[DENSE].append(order_within(dense_scores[q], rows))
        orders[HYBRID].append(fused_within(zs_scores[q], bm25_scores[q], rows, 1.0, settings.depth))
        orders[SERVED].append(
            fused_within(dense_scores[q], served_lexical[q], rows, settings.lexical_weight, settings.depth)
        )
    reranking = {n: [[view.item_ids[r] for r in o] for o in lists] for n, lists in orders.items()}

    # the served fusion's lexical weight, on retrieval
    sweep = {
        f"{w:g}": served_search(
            view, queries, none, K, engine=SearchEngine.for_items(items, replace(settings, lexical_weight=w))
        )[0]
        for w in WEIGHTS
    }
    swept = {w: per_query({w: lists}, grades, deep=False)[w]["ndcg"] for w, lists in sweep.items()}

    # what reducing plurals moves (ml.lexical.plural_stem): BM25 and the served fusion, each against itself
    # without it, on retrieval; paired over queries
    unstemmed = SearchEngine(plain, replace(settings, stem_plurals=False))
    pairs = {
        "bm25": (retrieval[BM25], retrieval[BM25_PLURALS]),
        "served": (
            served_search(view, queries, none, K)[0],
            served_search(view, queries, none, K, engine=unstemmed)[0],
        ),
    }
    plurals = {}
    for name, (reduced, kept) in pairs.items():
        ndcg = per_query({"reduced": reduced, "kept": kept}, grades, deep=False)
        plurals[name] = paired_summary(
            {"reduced": ndcg["reduced"]["ndcg"], "kept": ndcg["kept"]["ndcg"]}, queries, seed, "reduced"
        )["difference"]["kept"]
    out = {
        "n_queries": len(queries),
        "n_products": len(items),
        "n_judged": len(judged.judged),
        "dense_equals_zero_shot": dense_is_zero_shot,
        "retrieval": summarize(
            per_query({n: retrieval[n] for n in CROWDFLOWER_METHODS}, grades, deep=True), queries, seed
        ),
        "reranking": summarize(per_query(reranking, grades, deep=False), queries, seed),
        "sweep": sweep_summary(swept, queries, seed),
        "plural_reduction": plurals,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return out


def sweep_summary(ndcg: dict[str, list[float]], units: list[str], seed: int) -> dict[str, Any]:
    """Each weight's NDCG@K, and the best weight's lead over each other weight, paired."""
    from ml.evaluation.judged import paired_summary

    means = {w: float(np.nanmean(v)) for w, v in ndcg.items()}
    best = max(means, key=lambda w: (means[w], -float(w)))  # a tie goes to the lighter lexical weight
    return {"best": best, **paired_summary(ndcg, units, seed, best)}


def synthetic(ctx: Any, rec: Any) -> dict[str, Any]:
    """The evaluate stage's search table, and the lexical-weight sweep on the same hold-out search cases."""
    from ml.evaluation.judged import paired_summary
    from ml.evaluation.metrics import per_case_metrics
    from ml.evaluation.search import search_rankings
    from ml.pipeline import stages
    from ml.search.engine import SearchEngine

    searched = ctx.read("evaluate")["search"]
    cases = pd.read_parquet(ctx.path(stages.SEARCH_CASES))
    cases = cases[cases["item_id"].isin(rec.index_of)].reset_index(drop=True)  # as `search_evaluation` keeps them
    cases = cases.assign(history=[list(h) for h in cases["history"]])
    cached = CachedQueries(rec)
    ndcg = {}
    for w in WEIGHTS:
        engine = SearchEngine.for_items(rec.items, replace(rec.settings.search, lexical_weight=w))
        ranked = search_rankings(cached, cases, K, engine=engine)
        ndcg[f"{w:g}"] = per_case_metrics(ranked, cases["item_id"].tolist(), K)["ndcg"].astype(float).tolist()
    default = f"{rec.settings.search.lexical_weight:g}"
    same = bool(np.isclose(np.mean(ndcg[default]), searched["candidate"]["metrics"][f"ndcg_at_{K}"], atol=1e-12))
    users = cases["user_id"].astype(str).tolist()
    # served - dense only on the evaluate stage's resamples (same shoppers, same seed); weight 0 is the dense side
    versus_dense = paired_summary({SERVED: ndcg[default], DENSE: ndcg["0"]}, users, ctx.config.seed, SERVED)
    return {
        "n_cases": searched["n_cases"],
        "candidate": searched["candidate"],
        "dense_only": searched["dense_only"],
        "baselines": searched["baselines"],
        "uncertainty": searched["uncertainty"],
        "served_minus_dense": versus_dense["difference"][DENSE],
        "sweep": sweep_summary(ndcg, users, ctx.config.seed),
        "sweep_default_reproduces_evaluate": same,
    }


def run_seed(seed: int) -> dict[str, Any]:
    from ml.evaluation.baselines import zero_shot_encoder
    from ml.training.recommender import Recommender

    ctx, seconds = train(seed)
    rec = Recommender.load(Path(ctx.read("train")["model_dir"]))
    started = time.perf_counter()
    syn = synthetic(ctx, rec)
    syn["seconds"] = round(time.perf_counter() - started, 1)
    cf = crowdflower(rec, zero_shot_encoder(), seed)
    return {
        "seed": seed,
        "stage_seconds": seconds,
        "search_settings": asdict(rec.settings.search),
        "trainable_layers": ctx.config.trainable_layers,
        "synthetic": syn,
        "crowdflower": cf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (SHARED_DATA / "crowdflower-search").exists():
        raise SystemExit(f"{SHARED_DATA / 'crowdflower-search'} is absent: the Crowdflower judgments are needed")
    started = time.perf_counter()
    runs = [run_seed(s) for s in args.seeds]
    data = {
        "machine": machine(),
        "k": K,
        "deep": DEEP,
        "weights": list(WEIGHTS),
        "seeds": args.seeds,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write("search", data, markdown(data))


if __name__ == "__main__":
    main()
