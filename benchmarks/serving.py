"""Serving latency and throughput: the real service under concurrent load on loopback, next to bare top-k floors.

For each catalogue size (10k and 100k items by default) this script builds a servable model WITHOUT
training: the pretrained MiniLM (frozen) with RANDOM UNIT VECTORS as item embeddings and small random item
biases (the cost of the full score depends on the number and size of vectors, not on their values; random
titles too). It registers and promotes it in a temporary MLflow, fills a real Feast online store (SQLite)
with the recent items of 2,000 shoppers, starts `ml.serving.app.serve` (uvicorn, the service's default
number of workers) in a subprocess on 127.0.0.1, and drives it with N concurrent closed-loop keep-alive
HTTP/1.1 clients from a SEPARATE load-generator process (asyncio, raw sockets, so the client costs little;
`serving_load.py --drive`). Every level is bounded in requests and time; the server is stopped at
the end. Each level records its error count, the server's CPU per request, the CPU other processes used
meanwhile and the load average before and after (the machine may be shared). The target levels run several
times on the same server (`--target-repeats`, `--search-repeats`): one run's p99 is one draw. /search also gets
its capacity bound: the machine's cores over the in-process cost of one search (a floor). Floors: one shopper's top-10
by a bare numpy matrix-vector product, by a bare FAISS IndexFlatIP search (one thread), by the `DenseIndex`
serving uses, by the model's full score in numpy, and the service's whole path without HTTP.

The client and the server share the machine's cores, so the figures include the client's own cost.

    .venv/bin/python benchmarks/serving.py              # 10k and 100k, 1/16/64 clients (~5 min)
    .venv/bin/python benchmarks/serving.py --sizes 10000 --clients 16 --requests 500
    .venv/bin/python benchmarks/serving.py --search-only --sizes 10000 --out /tmp/x   # /search alone, elsewhere

Writes benchmarks/results/serving.json and serving.md.

The script is split in four: `serving_world.py` (the model, Feast and the server), `serving_load.py` (the load
generator), `serving_floors.py` (the floors) and `serving_report.py` (the Markdown); this file runs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_floors import floors  # noqa: E402
from serving_load import SEARCH_KINDS, load_level  # noqa: E402
from serving_report import TARGET_CLIENTS, TARGET_P99_MS, machine, markdown, merge_search_rows, versions  # noqa: E402
from serving_world import (  # noqa: E402
    FEATURE_WEIGHTS,
    HISTORY,
    N_SHOPPERS,
    REPO,
    K,
    build_world,
    free_port,
    start_server,
    stop_server,
    wait_healthy,
)

sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.serving")


def run_size(n: int, base: Path, args: argparse.Namespace, encoder: Any, levels: list[int]) -> dict[str, Any]:
    """Build one catalogue's world, start the server, run every load level, stop it, measure the floors; then
    the /search levels again on a server that encodes queries with torch (the same run, side by side)."""
    home = base / f"items{n}"
    home.mkdir()
    t0 = time.monotonic()
    world = build_world(home, n, args.seed, encoder)
    log.info("%d items: model registered and Feast filled in %.0f s", n, time.monotonic() - t0)
    plan = []
    if not args.search_only:
        plan += [("recommendations", c, max(50, args.requests // 4) if c == 1 else args.requests, 100) for c in levels]
    if args.search_requests:
        plan += [(kind, TARGET_CLIENTS, args.search_requests, 50) for kind in SEARCH_KINDS]
    if not args.search_only:
        plan.append(("healthz", TARGET_CLIENTS, args.requests, 100))  # the HTTP stack alone: the floor under the rest
    rows, repeats, search_repeats, startup = _serve_levels(
        home, n, args, plan, "onnx", target_repeats=not args.search_only
    )
    if args.search_requests:  # the torch encoder, for comparison: the cache cannot help it either
        torch_rows, _, _, _ = _serve_levels(
            home, n, args, [("search", TARGET_CLIENTS, args.search_requests, 50)], "torch", target_repeats=False
        )
        rows += torch_rows
    size_report = {
        "n_items": n,
        "startup_seconds": round(startup, 1),
        "load": rows,
        "target_repeats": repeats,
        "search_target_repeats": search_repeats,
        "floors": {} if args.search_only else floors(world, args.floor_queries, args.seed),
    }
    log.info("%d items floors %s", n, size_report["floors"])
    return size_report


def _serve_levels(
    home: Path,
    n: int,
    args: argparse.Namespace,
    plan: list[tuple[str, int, int, int]],
    query_encoder: str,
    target_repeats: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[dict[str, Any]]], float]:
    """Start the server with `query_encoder`, run the plan's levels (and the target levels' repeats: the
    recommendations' when `target_repeats`, the /search levels' with the exported encoder), stop it."""
    port, log_path = free_port(), home / f"server-{query_encoder}.log"
    proc = start_server(home, port, log_path, workers=args.workers, encoder=query_encoder)
    rows: list[dict[str, Any]] = []
    repeats: list[dict[str, Any]] = []
    search_repeats: dict[str, list[dict[str, Any]]] = {}
    try:
        startup = wait_healthy(port, proc, timeout=600, log_path=log_path, workers=args.workers)
        for i, (kind, clients, count, warmup) in enumerate(plan):
            row = load_level(port, proc.pid, kind, clients, count, args.max_seconds, warmup, args.seed + 1000 * i)
            if kind in SEARCH_KINDS:
                row["query_encoder"] = query_encoder
            log.info("%d items %s", n, {k: row[k] for k in row if k != "error_examples"})
            rows.append(row)
        # the target level again: on a shared machine one run's p99 is one draw, the repeats show the spread
        first = next((r for r in rows if r["endpoint"] == "recommendations" and r["clients"] == TARGET_CLIENTS), None)
        repeats = [first] if first and target_repeats else []
        for r in range(1, args.target_repeats if repeats else 0):
            row = load_level(
                port,
                proc.pid,
                "recommendations",
                TARGET_CLIENTS,
                args.requests,
                args.max_seconds,
                100,
                args.seed + 50_000 + r,
            )
            log.info("%d items target repeat %d %s", n, r, {k: row[k] for k in row if k != "error_examples"})
            repeats.append(row)
        # the /search target levels again, each kind in turn: their p99 moves from run to run as much as the
        # recommendations' does, so the verdict rests on the spread, not on one draw
        if query_encoder == "onnx":
            search_repeats = {r["endpoint"]: [r] for r in rows if r["endpoint"] in SEARCH_KINDS}
        for r in range(1, args.search_repeats if search_repeats else 0):
            for j, (kind, runs) in enumerate(search_repeats.items()):
                seed = args.seed + 60_000 + 100 * r + j
                row = load_level(port, proc.pid, kind, TARGET_CLIENTS, args.search_requests, args.max_seconds, 50, seed)
                row["query_encoder"] = query_encoder
                log.info("%d items %s repeat %d %s", n, kind, r, {k: row[k] for k in row if k != "error_examples"})
                runs.append(row)
    finally:
        stop_server(proc)
    return rows, repeats, search_repeats, startup


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level (1 client: a quarter)")
    parser.add_argument(
        "--search-requests", type=int, default=600, help="/search requests per level at 16 clients (0: skip)"
    )
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="only the /search levels; their rows replace those of the serving.json in --out, if any",
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per level")
    parser.add_argument("--floor-queries", type=int, default=300)
    parser.add_argument(
        "--target-repeats", type=int, default=5, help="runs of the target level (recommendations, 16 clients)"
    )
    parser.add_argument(
        "--search-repeats", type=int, default=5, help="runs of each /search level with the exported encoder"
    )
    parser.add_argument("--workers", type=int, default=None, help="uvicorn workers (default: the service's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.workers is None:
        from ml.serving.app import DEFAULT_WORKERS

        args.workers = DEFAULT_WORKERS
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ml.training.encoder import load_encoder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)

    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.clients.split(",")]
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "k": K,
            "shoppers": N_SHOPPERS,
            "history": HISTORY,
            "workers": args.workers,
            "item_vectors": "random unit vectors (not a trained model)",
            "feature_weights": FEATURE_WEIGHTS,
            "requests_per_level": args.requests,
            "max_seconds": args.max_seconds,
            "load_generator": "separate process, asyncio, one keep-alive connection per closed-loop client",
        },
        "target": {"endpoint": "recommendations", "clients": TARGET_CLIENTS, "p99_ms": TARGET_P99_MS},
        "sizes": [],
    }
    encoder = load_encoder()
    base = Path(tempfile.mkdtemp(prefix="vetted-bench-serving-"))
    try:
        for n in sizes:
            report["sizes"].append(run_size(n, base, args, encoder, levels))
    finally:
        if args.keep:
            log.info("homes kept in %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.search_only and (args.out / "serving.json").exists():
        report = merge_search_rows(json.loads((args.out / "serving.json").read_text()), report)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving.md").write_text(markdown(report))
    log.info("wrote %s and %s in %.0f s", args.out / "serving.json", args.out / "serving.md", report["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
