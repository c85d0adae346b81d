"""The serving benchmark's floors: one shopper's top-10 without HTTP, on one thread, for the tables' reference.

`benchmarks/serving.py` calls `floors`. Run alone, this script measures the floors with each first pass of the
dense top (`ml.search.dense`: int8, float32, and auto, the one measured faster at load) forced in turn through
`VETTED_DENSE_FIRST_PASS` (it reaches search's `DenseIndex` and the recommendations' scorer alike), the passes
interleaved and repeated, keeping each floor's best repeat (the machine may be shared):

    .venv/bin/python benchmarks/serving_floors.py                        # 10k and 100k items, 3 repeats
    .venv/bin/python benchmarks/serving_floors.py --sizes 10000 --repeats 1 --out /tmp/x

Writes benchmarks/results/serving-first-pass.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_load import search_query  # noqa: E402
from serving_world import N_SHOPPERS, PSEUDONYM_KEY, REPO, K, build_world  # noqa: E402

sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.serving_floors")
BATCH = 32  # the search batch timed beside one query (`ml.serving.batching.DEFAULT_MAX_BATCH`)
MODES = ("auto", "int8", "float32")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 4) for q in (50, 95, 99)}


def floors(world: dict[str, Any], n_queries: int, seed: int) -> dict[str, Any]:
    """One shopper's top-10 without HTTP, one thread: a bare numpy matrix-vector product, a bare FAISS
    IndexFlatIP search, the exact top by inner product of the `DenseIndex` that serving uses (its first pass
    over the item vectors, int8 or float32 as `VETTED_DENSE_FIRST_PASS` says or as measured faster at load,
    then exact scores of the candidates; also per batch of `BATCH` queries, as search ranks them), the model's
    full score of every item (`Champion.history_scores`) followed by a top-k, and the service's whole path
    (pseudonym, Feast read, the exact top-k of `Champion.top_for_histories`, explanations). For search: the
    exported query encoder's forward pass alone, and a whole search as `ranking.search` serves it (pseudonym, Feast
    read, the query's vector, dense and lexical passes, fusion, explanations) with a new query and with a cached
    one. Also which first pass each part runs, and the seconds the `DenseIndex` took to build (quantization and the
    measurement of auto)."""
    import faiss
    from threadpoolctl import threadpool_limits

    from ml.features import store as fs
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.search.dense import DenseIndex
    from ml.serving import ranking
    from ml.serving.champion import build_champion, one_openmp_thread
    from ml.serving.history import HistoryReader
    from ml.training.recommender import Recommender

    rng = np.random.default_rng(seed)
    vectors = world["vectors"]
    queries = rng.normal(size=(n_queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def warm_then_time(fn: Any, items: list[Any]) -> list[float]:
        """`fn` on the first 20 items untimed, then on each later one, timed: each item is run once, so an item
        meant to be new (a search text the query cache has not seen) stays new."""
        for item in items[:20]:
            fn(item)
        out = []
        for item in items[20:]:
            t0 = time.perf_counter()
            fn(item)
            out.append(time.perf_counter() - t0)
        return out

    def time_each(fn: Any) -> list[float]:
        for q in queries[:20]:
            fn(q)
        out = []
        for q in queries:
            t0 = time.perf_counter()
            fn(q)
            out.append(time.perf_counter() - t0)
        return out

    def numpy_top(q: np.ndarray) -> np.ndarray:
        s = vectors @ q
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])]

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    t0 = time.perf_counter()
    dense = DenseIndex(vectors)
    build_seconds = time.perf_counter() - t0
    one_openmp_thread()  # the DenseIndex's integer product runs in torch: one thread, as in the service
    rec = Recommender.load(world["folder"])
    champion = build_champion(rec, "benchmark", "1", {}, world["folder"])
    reader = HistoryReader(fs.open_store(fs.repo_config(world["settings"].feast_dir)))
    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    rnd = random.Random(seed)
    histories = [
        ranking.history_rows(champion, reader.recent_items(pseudo.pseudonym(f"shopper{u}"))) for u in range(200)
    ]
    options = ranking.RankingOptions()

    def full_score_top(_: np.ndarray) -> None:
        s = champion.history_scores([rnd.choice(histories)])[0]
        top = np.argpartition(-s, K)[:K]
        top[np.argsort(-s[top])]

    def service_path(_: np.ndarray) -> None:
        history = reader.recent_items(pseudo.pseudonym(f"shopper{rnd.randrange(N_SHOPPERS)}"))
        ranking.recommend(champion, history, K, options)

    # searches as `ranking.search` serves them, one thread: a shopper's pseudonym and Feast read, the query's
    # vector, the dense and lexical passes, fusion and explanations. "new": every text differs, so the query cache
    # never answers and the exported encoder runs each time; "cached": texts from a small pool, all encoded before
    # the timing, so the cache answers every one
    new_queries = [search_query("search", rnd) for _ in range(len(queries) + 20)]
    cached_pool = [search_query("search", rnd) for _ in range(50)]
    for text in cached_pool:
        champion.query_vectors([text])

    def search_path(text: str) -> None:
        history = reader.recent_items(pseudo.pseudonym(f"shopper{rnd.randrange(N_SHOPPERS)}"))
        ranking.search(champion, text, history, K, options)

    encoder = champion.recommender.query_encoder

    def encoder_times() -> list[float]:  # the exported encoder's forward pass alone (no cache), new texts
        if encoder is None:
            return []
        keys = encoder.token_ids([search_query("search", rnd) for _ in range(len(queries) + 20)])
        return warm_then_time(encoder.run, keys)

    def batch_times() -> list[float]:
        batches = [queries[i : i + BATCH] for i in range(0, len(queries) - BATCH + 1, BATCH)]
        dense.search(batches[0], K)
        out = []
        for batch in batches:
            t0 = time.perf_counter()
            dense.search(batch, K)
            out.append(time.perf_counter() - t0)
        return out

    with threadpool_limits(limits=1):  # one BLAS thread, as in the service
        return {
            "numpy_topk": _percentiles(time_each(numpy_top)),
            "faiss_flat_ip_topk": _percentiles(time_each(lambda q: index.search(q[None], K))),
            "dense_index_topk": _percentiles(time_each(lambda q: dense.search(q[None], K))),
            f"dense_index_batch{BATCH}_topk": _percentiles(batch_times()),
            "full_score_topk": _percentiles(time_each(full_score_top)),
            "in_process_recommendation": _percentiles(time_each(service_path)),
            **({"query_encoder_alone": _percentiles(times)} if (times := encoder_times()) else {}),
            "in_process_search_new": _percentiles(warm_then_time(search_path, new_queries)),
            "in_process_search_cached": _percentiles(
                warm_then_time(search_path, [rnd.choice(cached_pool) for _ in range(len(queries) + 20)])
            ),
            "search_query_encoder": champion.query_encoder,
            "first_pass": {
                "dense_index": dense.first_pass,
                "search": champion.dense.first_pass,
                "recommendations": champion.scorer.quantized.first_pass if champion.scorer else "none",
            },
            "dense_index_build_seconds": round(build_seconds, 3),
        }


def first_pass_runs(world: dict[str, Any], modes: list[str], repeats: int, n_queries: int, seed: int) -> dict:
    """`floors` with each first pass forced in turn (`VETTED_DENSE_FIRST_PASS`), the passes interleaved, `repeats`
    times; per pass, every run and each floor's best run (the lowest p50)."""
    from ml.search.dense import FIRST_PASS_ENV

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    before = os.environ.get(FIRST_PASS_ENV)
    try:
        for r in range(repeats):
            for mode in modes:
                os.environ[FIRST_PASS_ENV] = mode
                run = floors(world, n_queries, seed + r)
                run["load_average"] = [round(x, 2) for x in os.getloadavg()]
                log.info("%d items, %s, repeat %d: %s", len(world["vectors"]), mode, r, run)
                runs[mode].append(run)
    finally:
        if before is None:
            os.environ.pop(FIRST_PASS_ENV, None)
        else:
            os.environ[FIRST_PASS_ENV] = before
    timed = [key for key, value in runs[modes[0]][0].items() if isinstance(value, dict) and "p50_ms" in value]
    best = {
        mode: {key: min((run[key] for run in mode_runs), key=lambda f: f["p50_ms"]) for key in timed}
        for mode, mode_runs in runs.items()
    }
    return {"runs": runs, "best": best}


def markdown(report: dict[str, Any]) -> str:
    """The floors per first pass and catalogue size, best of the repeats (p50 / p95 / p99 ms)."""
    from serving_report import FLOORS

    names = {
        **FLOORS,
        "dense_index_topk": "DenseIndex, one query",
        f"dense_index_batch{BATCH}_topk": f"DenseIndex, a batch of {BATCH} queries (per batch)",
    }
    sizes = report["sizes"]
    lines = [
        "# Serving floors by the dense first pass (int8, float32, auto)",
        "",
        f"Measured {report['date']} on {report['machine']['cpu']} ({report['machine']['cores']} cores), "
        f"Python {report['machine']['python']}; numpy {report['versions']['numpy']}, torch {report['versions']['torch']}.",
        f"Load average (1, 5, 15 min) at the start / end: {report['load_average_before']} / "
        f"{report['load_average_after']}. The machine was shared with other work: each pass ran "
        f"{report['repeats']} times, interleaved with the others, and each floor keeps its best run (lowest p50); "
        "the JSON next to this file has every run and the load average after each.",
        "",
        f"One shopper's top-{K}, one thread, no HTTP, {report['queries']} random unit queries per run; items are "
        "random unit vectors (384 dims). `VETTED_DENSE_FIRST_PASS` forces the first pass of `ml.search.dense` "
        "for the `DenseIndex` timed here, search's index and the recommendations' scorer alike; *auto* measures "
        "both on the table at load and keeps the faster.",
        "",
        "| floor | first pass | " + " | ".join(f"{s['n_items']:,} items" for s in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for key, name in names.items():
        for mode in report["modes"]:
            cells = []
            for s in sizes:
                f = s["best"][mode].get(key)
                cells.append(f"{f['p50_ms']:.2f} / {f['p95_ms']:.2f} / {f['p99_ms']:.2f}" if f else "-")
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "What auto chose, and what building the `DenseIndex` took (quantization and, for auto, the measurement):",
        "",
    ]
    for s in sizes:
        for mode in report["modes"]:
            chosen = sorted({json.dumps(run["first_pass"], sort_keys=True) for run in s["runs"][mode]})
            built = [run["dense_index_build_seconds"] for run in s["runs"][mode]]
            lines.append(
                f"- {s['n_items']:,} items, {mode}: first pass {', '.join(chosen)}; DenseIndex built in "
                f"{min(built):.2f}-{max(built):.2f} s"
            )
    lines += ["", "Written by `benchmarks/serving_floors.py`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    modes = args.modes.split(",")
    if args.repeats < 1 or args.queries < BATCH + 20 or not set(modes) <= set(MODES):
        parser.error(f"--repeats >= 1, --queries >= {BATCH + 20}, --modes among {','.join(MODES)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    from serving_report import machine, versions

    from ml.training.encoder import load_encoder

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "modes": modes,
        "repeats": args.repeats,
        "queries": args.queries,
        "sizes": [],
    }
    encoder = load_encoder()
    base = Path(tempfile.mkdtemp(prefix="vetted-bench-floors-"))
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            home = base / f"items{n}"
            home.mkdir()
            world = build_world(home, n, args.seed, encoder)
            report["sizes"].append(
                {"n_items": n, **first_pass_runs(world, modes, args.repeats, args.queries, args.seed)}
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving-first-pass.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving-first-pass.md").write_text(markdown(report))
    log.info("wrote %s", args.out / "serving-first-pass.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
