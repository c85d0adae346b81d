"""Serving latency and throughput: the real service under concurrent load on loopback, next to bare top-k floors.

For each catalogue size (10k and 100k items by default) this script builds a servable model WITHOUT
training: the pretrained MiniLM (frozen) with RANDOM UNIT VECTORS as item embeddings and small random item
biases (FAISS's cost depends on the number and size of vectors, not on their values; random titles too).
It registers and promotes it in a temporary MLflow, fills a real Feast online store (SQLite) with the
recent items of 2,000 shoppers, starts `ml.serving.app.serve` (uvicorn, one worker) in a subprocess on
127.0.0.1, and drives it with N concurrent keep-alive HTTP/1.1 clients (one asyncio process, raw sockets so
the client costs little). Every request count and every level's time is bounded; the server is stopped at
the end. Floors: one query's top-10 by a bare numpy matrix-vector product and by a bare FAISS IndexFlatIP
search (one thread), and the whole in-process path without HTTP (Feast read + history tower + FAISS).

The client and the server share the machine's cores, so the figures include the client's own cost.

    python benchmarks/serving.py                     # 10k and 100k, 1/16/64 clients
    python benchmarks/serving.py --sizes 10000 --clients 16 --requests 500

Writes benchmarks/results/serving.json and serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.serving")

API_KEY = "benchmark-api-key-0123456789abcdef"
PSEUDONYM_KEY = "benchmark-pseudonym-key-0123456789abcdef"
N_SHOPPERS = 2000
HISTORY = 8
K = 10
TARGET_P99_MS = 20.0
TARGET_CLIENTS = 16
SEARCH_QUERIES = ["red running shoes", "blue ceramic mug", "warm winter jacket", "desk lamp", "kettle steel"]


# ------------------------------------------------------------------------------------------------ the world
def build_world(home: Path, n_items: int, seed: int, bert_and_tokenizer: Any) -> dict[str, Any]:
    """A promoted model over `n_items` random unit vectors, and a Feast store with shoppers' histories."""
    import mlflow
    import pandas as pd
    import torch

    from ml.config import Settings
    from ml.features import store as fs
    from ml.features.build import write_feature_tables
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.registry import registration as reg
    from ml.registry.pyfunc import input_example
    from ml.registry.tracking import client, configure
    from ml.training.model import BiEncoder
    from ml.training.recommender import Recommender, RecommenderSettings

    rng = np.random.default_rng(seed)
    settings = Settings(
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=(home / "mlartifacts").as_uri(),
    )
    words = [
        "red",
        "blue",
        "green",
        "steel",
        "wool",
        "ceramic",
        "shoe",
        "mug",
        "lamp",
        "jacket",
        "kettle",
        "desk",
    ]
    n_brands = max(10, n_items // 50)
    brand_of = np.minimum((rng.pareto(1.2, size=n_items) * 3).astype(int), n_brands - 1)  # a long tail
    items = pd.DataFrame(
        {
            "item_id": [f"it{i:06d}" for i in range(n_items)],
            "title": [f"{words[i % 12]} {words[(i // 12) % 12]} item {i}" for i in range(n_items)],
            "description": [""] * n_items,
            "brand": [f"brand{b:04d}" for b in brand_of],
            "category": [f"cat{i % 40}" for i in range(n_items)],
            "price": [1.0] * n_items,
        }
    )
    bert, tokenizer = bert_and_tokenizer
    model = BiEncoder(bert, n_items=n_items, trainable_layers=0, max_history=HISTORY)
    vectors = rng.normal(size=(n_items, model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with torch.no_grad():
        model.item_table.copy_(torch.from_numpy(vectors))
        model.item_bias.weight.copy_(
            torch.from_numpy(rng.normal(0, 0.1, size=(n_items, 1)).astype(np.float32))
        )
    rec_settings = RecommenderSettings(
        temperature=0.05, max_history=HISTORY, max_query_tokens=32, max_item_tokens=48
    )
    folder = Recommender(model, tokenizer, items, rec_settings).save(home / "model")

    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = reg.log_model(folder, input_example([list(items["item_id"][:3])], "red shoe"))
    c = client(settings)
    version = reg.register(
        c, settings.model_name, uri, run.info.run_id, {"gate.status": "passed"}, "benchmark"
    )
    reg.promote(c, settings.model_name, version.version, actor="benchmark")

    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)
    shoppers = [f"shopper{u}" for u in range(N_SHOPPERS)]
    rows = []
    for u, raw in enumerate(shoppers):
        p = pseudo.pseudonym(raw)
        for j, item in enumerate(rng.integers(0, n_items, size=HISTORY)):
            rows.append(
                {
                    "event_id": f"e{u}-{j}",
                    "user_id": p,
                    "item_id": f"it{item:06d}",
                    "event_type": "click",
                    "query": None,
                    "ts": start + pd.Timedelta(seconds=u * 10 + j),
                }
            )
    now = datetime.now(UTC)
    write_feature_tables(home / "features", items, pd.DataFrame(rows), HISTORY, pd.Timestamp(now))
    store = fs.open_store(fs.repo_config(settings.feast_dir, settings.profile))
    fs.apply_definitions(store, home / "features")
    fs.materialize(store, now)
    return {
        "settings": settings,
        "folder": folder,
        "shoppers": shoppers,
        "vectors": vectors,
        "version": version.version,
    }


# ------------------------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "VETTED_HOME": str(home),
        "VETTED_API_KEY": API_KEY,
        "VETTED_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "VETTED_DEMO": "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "TOKENIZERS_PARALLELISM": "false",
    }
    code = (
        "import logging; logging.basicConfig(level=logging.INFO); "
        "from ml.config import Settings; from ml.serving.app import serve; "
        f"serve(Settings.from_env(), host='127.0.0.1', port={port})"
    )
    with log_path.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT
        )


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, log_path: Path) -> float:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}; see {log_path}:\n"
                + "\n".join(log_path.read_text().splitlines()[-15:])
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not healthy within {timeout:.0f} s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------------------ the load
def _request_bytes(kind: str, rnd: random.Random, shoppers: list[str], port: int) -> bytes:
    host = f"127.0.0.1:{port}"
    if kind == "healthz":
        return f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    if kind == "recommendations":
        return (
            f"GET /recommendations/{rnd.choice(shoppers)}?k={K} HTTP/1.1\r\nHost: {host}\r\n"
            f"X-API-Key: {API_KEY}\r\n\r\n"
        ).encode()
    body = json.dumps({"query": rnd.choice(SEARCH_QUERIES), "k": K, "user_id": rnd.choice(shoppers)}).encode()
    return (
        f"POST /search HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _client(
    port: int,
    kind: str,
    shoppers: list[str],
    budget: list[int],
    deadline: float,
    seed: int,
    out: list[tuple[float, int]],
) -> None:
    rnd = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            request = _request_bytes(kind, rnd, shoppers, port)
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.append((time.perf_counter() - t0, status))
    finally:
        writer.close()


async def _drive(
    port: int, kind: str, clients: int, requests: int, max_seconds: float, shoppers: list[str]
) -> tuple[list[tuple[float, int]], float]:
    out: list[tuple[float, int]] = []
    budget = [requests]
    start = time.perf_counter()
    await asyncio.gather(
        *(_client(port, kind, shoppers, budget, start + max_seconds, seed, out) for seed in range(clients))
    )
    return out, time.perf_counter() - start


def load_level(
    port: int, kind: str, clients: int, requests: int, max_seconds: float, shoppers: list[str], warmup: int
) -> dict[str, Any]:
    asyncio.run(_drive(port, kind, min(clients, 4), warmup, max_seconds, shoppers))
    out, wall = asyncio.run(_drive(port, kind, clients, requests, max_seconds, shoppers))
    latencies = np.array([t for t, _ in out]) * 1000
    errors = sum(1 for _, s in out if s != 200)
    return {
        "endpoint": kind,
        "clients": clients,
        "requests": len(out),
        "errors": errors,
        "seconds": round(wall, 3),
        "throughput_rps": round(len(out) / wall, 1),
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 3) for q in (50, 95, 99)},
        "max_ms": round(float(latencies.max()), 3),
    }


# ------------------------------------------------------------------------------------------------ the floors
def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 4) for q in (50, 95, 99)}


def floors(world: dict[str, Any], n_queries: int, seed: int) -> dict[str, Any]:
    """Single-query top-10 without HTTP: bare numpy, bare FAISS (1 thread), and the service's own path."""
    import faiss

    from ml.features import store as fs
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.serving.champion import build_index
    from ml.serving.history import HistoryReader
    from ml.training.recommender import Recommender

    rng = np.random.default_rng(seed)
    vectors = world["vectors"]
    queries = rng.normal(size=(n_queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

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

    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with threadpool_limits(limits=1):  # one BLAS thread, like FAISS (two threads only contend here)
        numpy_times = time_each(numpy_top)
    result = {
        "numpy_topk": _percentiles(numpy_times),
        "faiss_flat_ip_topk": _percentiles(time_each(lambda q: index.search(q[None], K))),
    }

    rec = Recommender.load(world["folder"])
    served = build_index(rec.augmented_items())
    reader = HistoryReader(fs.open_store(fs.repo_config(world["settings"].feast_dir)))
    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    shoppers = world["shoppers"]
    rnd = random.Random(seed)

    def in_process(_: np.ndarray) -> None:
        history = reader.recent_items(pseudo.pseudonym(rnd.choice(shoppers)))
        served.search(rec.augmented_queries(rec.history_vectors([history])), K)

    result["in_process_recommendation"] = _percentiles(time_each(in_process))
    return result


# ------------------------------------------------------------------------------------------------ the report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gb,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    out = {}
    for name in (
        "numpy",
        "faiss-cpu",
        "torch",
        "fastapi",
        "uvicorn",
        "pydantic",
        "mlflow",
        "feast",
        "vetted",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        "# Serving benchmark",
        "",
        f"Measured {report['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), {m['platform']}, "
        f"Python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Load average before / after: {report['load_average_before']} / {report['load_average_after']} "
        "(other work on the machine inflates the tails).",
        "",
        "Item vectors are random unit vectors (384 dims + bias; exact IndexFlatIP search), so the figures measure "
        "the service, not the model's quality. Clients and server share the cores; each request is one "
        f"shopper (of {N_SHOPPERS}, {HISTORY} recent items each in the Feast SQLite online store), k={K}. "
        "`/search` runs MiniLM on the query (with the shopper's history blended in). "
        "`/healthz` (no model, no key) is the floor of the HTTP stack itself.",
        "",
        f"Target: p99 < {TARGET_P99_MS:.0f} ms for `/recommendations` with {TARGET_CLIENTS} clients.",
        "",
        "| items | endpoint | clients | requests | errors | p50 ms | p95 ms | p99 ms | max ms | req/s | target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in report["sizes"]:
        for row in size["load"]:
            target = ""
            if row["endpoint"] == "recommendations" and row["clients"] == TARGET_CLIENTS:
                target = "met" if row["p99_ms"] < TARGET_P99_MS and row["errors"] == 0 else "MISSED"
            lines.append(
                f"| {size['n_items']:,} | /{row['endpoint']} | {row['clients']} | {row['requests']} | "
                f"{row['errors']} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['max_ms']:.2f} | {row['throughput_rps']:.0f} | {target} |"
            )
    lines += [
        "",
        "Floors: one query's top-10, single thread, no HTTP (p50 / p95 / p99 ms).",
        "",
        "| items | bare numpy | bare FAISS IndexFlatIP | in-process recommendation (Feast + history tower + FAISS) |",
        "|---:|---|---|---|",
    ]
    for size in report["sizes"]:
        f = size["floors"]
        cells = [
            f"{f[key]['p50_ms']:.2f} / {f[key]['p95_ms']:.2f} / {f[key]['p99_ms']:.2f}"
            for key in ("numpy_topk", "faiss_flat_ip_topk", "in_process_recommendation")
        ]
        lines.append(f"| {size['n_items']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reading: with closed-loop clients, latency is about clients / throughput (Little's law), so the "
        "p99 target at 16 clients is a throughput target:",
        "",
    ]
    for size in report["sizes"]:
        recs = {r["clients"]: r for r in size["load"] if r["endpoint"] == "recommendations"}
        if len(recs) < 2:
            continue
        one, most = recs[min(recs)], recs[max(recs)]
        per_request = 1000 / max(r["throughput_rps"] for r in recs.values())
        lines.append(
            f"- {size['n_items']:,} items: {one['throughput_rps']:.0f} req/s with {min(recs)} client(s), "
            f"{most['throughput_rps']:.0f} with {max(recs)} (x{most['throughput_rps'] / one['throughput_rps']:.2f}); "
            f"the best level's throughput means {per_request:.1f} ms of server time per request, against "
            f"{size['floors']['in_process_recommendation']['p50_ms']:.1f} ms (p50) for the same work in process "
            "plus the HTTP stack's own cost (the /healthz row)."
        )
    lines += [
        "",
        "Server start to healthy (load, index, warm-up): "
        + ", ".join(f"{s['n_items']:,} items {s['startup_seconds']:.1f} s" for s in report["sizes"])
        + ".",
        "",
        "Written by `benchmarks/serving.py`; the JSON next to this file has every figure.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level (1 client: a quarter)")
    parser.add_argument(
        "--search-requests", type=int, default=300, help="/search requests at 16 clients (0: skip)"
    )
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time bound per level")
    parser.add_argument("--floor-queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ml.training.encoder import load_encoder

    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.clients.split(",")]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "k": K,
            "shoppers": N_SHOPPERS,
            "history": HISTORY,
            "workers": 1,
            "item_vectors": "random unit vectors (not a trained model)",
            "requests_per_level": args.requests,
            "max_seconds": args.max_seconds,
        },
        "target": {"endpoint": "recommendations", "clients": TARGET_CLIENTS, "p99_ms": TARGET_P99_MS},
        "sizes": [],
    }
    encoder = load_encoder()
    base = Path(tempfile.mkdtemp(prefix="vetted-bench-serving-"))
    try:
        for n in sizes:
            home = base / f"items{n}"
            home.mkdir()
            t0 = time.monotonic()
            world = build_world(home, n, args.seed, encoder)
            log.info("%d items: model registered and Feast filled in %.0f s", n, time.monotonic() - t0)
            port, log_path = free_port(), home / "server.log"
            proc = start_server(home, port, log_path)
            try:
                startup = wait_healthy(port, proc, timeout=600, log_path=log_path)
                rows = []
                for clients in levels:
                    count = max(50, args.requests // 4) if clients == 1 else args.requests
                    row = load_level(
                        port,
                        "recommendations",
                        clients,
                        count,
                        args.max_seconds,
                        world["shoppers"],
                        warmup=100,
                    )
                    log.info("%d items %s", n, row)
                    rows.append(row)
                if args.search_requests:
                    row = load_level(
                        port,
                        "search",
                        TARGET_CLIENTS,
                        args.search_requests,
                        args.max_seconds,
                        world["shoppers"],
                        warmup=20,
                    )
                    log.info("%d items %s", n, row)
                    rows.append(row)
                # the HTTP stack alone (uvicorn + FastAPI, no model, no auth): the floor under the rows above
                row = load_level(
                    port,
                    "healthz",
                    TARGET_CLIENTS,
                    args.requests,
                    args.max_seconds,
                    world["shoppers"],
                    warmup=100,
                )
                log.info("%d items %s", n, row)
                rows.append(row)
            finally:
                stop_server(proc)
            size_report = {
                "n_items": n,
                "startup_seconds": round(startup, 1),
                "load": rows,
                "floors": floors(world, args.floor_queries, args.seed),
            }
            log.info("%d items floors %s", n, size_report["floors"])
            report["sizes"].append(size_report)
    finally:
        if args.keep:
            log.info("homes kept in %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving.md").write_text(markdown(report))
    log.info("wrote %s and %s", args.out / "serving.json", args.out / "serving.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
