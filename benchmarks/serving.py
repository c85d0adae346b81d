"""Serving latency and throughput: the real service under concurrent load on loopback, next to bare top-k floors.

For each catalogue size (10k and 100k items by default) this script builds a servable model WITHOUT
training: the pretrained MiniLM (frozen) with RANDOM UNIT VECTORS as item embeddings and small random item
biases (the cost of the full score depends on the number and size of vectors, not on their values; random
titles too). It registers and promotes it in a temporary MLflow, fills a real Feast online store (SQLite)
with the recent items of 2,000 shoppers, starts `ml.serving.app.serve` (uvicorn, the service's default
number of workers) in a subprocess on 127.0.0.1, and drives it with N concurrent closed-loop keep-alive
HTTP/1.1 clients from a SEPARATE load-generator process (asyncio, raw sockets, so the client costs little;
this script re-run with `--drive`). Every level is bounded in requests and time; the server is stopped at
the end. Each level records its error count, the server's CPU per request, the CPU other processes used
meanwhile and the load average before and after (the machine may be shared). Floors: one shopper's top-10
by a bare numpy matrix-vector product, by a bare FAISS IndexFlatIP search (one thread), by the model's full
score in numpy, and the service's whole path without HTTP.

The client and the server share the machine's cores, so the figures include the client's own cost.

    .venv/bin/python benchmarks/serving.py              # 10k and 100k, 1/16/64 clients (~5 min)
    .venv/bin/python benchmarks/serving.py --sizes 10000 --clients 16 --requests 500

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
# shared brand, repeat, same category, same brand, item transition, closest history item, lexical
# (BiEncoder's order; a model with fewer features takes the first ones)
FEATURE_WEIGHTS = [0.5, -1.0, 0.3, 0.3, 0.5, 1.0, 0.5]
BUSY_OTHER_CORES = 0.25  # a level is marked "busy" when other processes used more CPU than this
# /search queries: words of the catalogue's titles and others no title holds, two or three of them. "search":
# every request's text is new (a number appended), so the query cache never answers: the encoder's full cost.
# "search_repeated": drawn from a pool by a Zipf law, as a shop's head queries repeat, so the cache answers some.
QUERY_WORDS = ["red", "blue", "green", "steel", "wool", "ceramic", "shoe", "mug", "lamp", "jacket", "kettle",
               "desk", "running", "winter", "warm", "small", "large", "kids", "gift", "set", "cheap", "best"]
SEARCH_KINDS = ("search", "search_repeated")
SEARCH_POOL = 2000
SEARCH_ZIPF = 1.1
# the issue's /search targets: p99 at 16 clients, by catalogue size
SEARCH_TARGET_P99_MS = {10_000: 30.0, 100_000: 50.0}


_ZIPF_CUMULATIVE = np.cumsum(np.arange(1, SEARCH_POOL + 1, dtype=float) ** -SEARCH_ZIPF).tolist()


def search_query(kind: str, rnd: random.Random) -> str:
    if kind == "search_repeated":  # the pool's query of a Zipf-drawn rank (the same text for a rank every time)
        rank = rnd.choices(range(SEARCH_POOL), cum_weights=_ZIPF_CUMULATIVE)[0]
        pool = random.Random(rank)
        return " ".join(pool.choice(QUERY_WORDS) for _ in range(pool.randint(2, 3)))
    return " ".join(rnd.choice(QUERY_WORDS) for _ in range(rnd.randint(2, 3))) + f" {rnd.randrange(10**9)}"


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
    from ml.registry.integrity import digest_tags
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
        # non-zero behavioural weights, as a trained model has (zeros would let the service skip the
        # closest-history-item similarity, the costliest part of the score)
        weights = torch.tensor(FEATURE_WEIGHTS[: model.feature_weights.weight.numel()])
        model.feature_weights.weight.copy_(weights)
    rec_settings = RecommenderSettings(
        temperature=0.05, max_history=HISTORY, max_query_tokens=32, max_item_tokens=48
    )
    folder = Recommender(model, tokenizer, items, rec_settings).save(home / "model")

    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = reg.log_model(folder, input_example([list(items["item_id"][:3])], "red shoe"))
    c = client(settings)
    tags = {"gate.status": "passed", **digest_tags(folder)}  # serving verifies the files against them
    version = reg.register(c, settings.model_name, uri, run.info.run_id, tags, "benchmark")
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


def start_server(home: Path, port: int, log_path: Path, workers: int = 1, encoder: str = "onnx"
                 ) -> subprocess.Popen:
    env = {
        "VETTED_QUERY_ENCODER": encoder,
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
        f"serve(Settings.from_env(), host='127.0.0.1', port={port}, workers={workers})"
    )
    with log_path.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT
        )


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, log_path: Path, workers: int = 1) -> float:
    """Seconds until /healthz answers 200 and every worker has started. With several workers, the first
    to answer is not enough: the clients' keep-alive connections opened before the others start would
    all go to it (seen: all 16 to one of two workers)."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}; see {log_path}:\n"
                + "\n".join(log_path.read_text().splitlines()[-15:])
            )
        try:
            healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and log_path.read_text().count("Application startup complete") >= workers:
            return time.monotonic() - start
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
def _request_bytes(kind: str, rnd: random.Random, n_shoppers: int, port: int) -> bytes:
    host = f"127.0.0.1:{port}"
    shopper = f"shopper{rnd.randrange(n_shoppers)}"
    if kind == "healthz":
        return f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    if kind == "recommendations":
        return (
            f"GET /recommendations/{shopper}?k={K} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n\r\n"
        ).encode()
    body = json.dumps({"query": search_query(kind, rnd), "k": K, "user_id": shopper}).encode()
    return (
        f"POST /search HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _client(
    port: int, kind: str, n_shoppers: int, budget: list[int], deadline: float, seed: int, out: list
) -> None:
    """One closed-loop client on one keep-alive connection; a failed exchange is an error, then it reconnects."""
    rnd = random.Random(seed)
    writer = None
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            request = _request_bytes(kind, rnd, n_shoppers, port)
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
                status = f"{type(err).__name__}: {err}"[:200]
                if writer is not None:
                    writer.close()
                writer = None
            out.append((time.perf_counter() - t0, status))
    finally:
        if writer is not None:
            writer.close()


async def _drive(spec: dict[str, Any]) -> tuple[list, float]:
    out: list = []
    budget = [spec["requests"]]
    start = time.perf_counter()
    deadline = start + spec["max_seconds"]
    await asyncio.gather(
        *(
            _client(spec["port"], spec["kind"], spec["n_shoppers"], budget, deadline, spec["seed"] + c, out)
            for c in range(spec["clients"])
        )
    )
    return out, time.perf_counter() - start


def drive_main(spec_json: str) -> int:
    """The load generator's own process (`--drive SPEC`): warm-up, then the measured run; JSON to stdout."""
    spec = json.loads(spec_json)
    if spec["warmup"]:
        asyncio.run(_drive({**spec, "clients": min(spec["clients"], 4), "requests": spec["warmup"]}))
    cpu0 = time.process_time()
    out, wall = asyncio.run(_drive(spec))
    statuses = [s for _, s in out]
    json.dump(
        {
            "latencies_ms": [round(t * 1000, 4) for t, _ in out],
            "errors": [s for s in statuses if s != 200][:20],
            "n_errors": sum(1 for s in statuses if s != 200),
            "seconds": wall,
            "client_cpu_seconds": time.process_time() - cpu0,
            "client_process_cpu_seconds": time.process_time(),
        },
        sys.stdout,
    )
    return 0


class CpuMeter:
    """CPU seconds used, between `start` and `stop`, by the server (with its workers), by the load
    generator, and by everything else on the machine (other jobs sharing the cores)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    @staticmethod
    def _machine_busy() -> float:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _server(self) -> float:
        import psutil

        root = psutil.Process(self.server_pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def start(self) -> None:
        self._t0, self._busy0, self._server0 = time.perf_counter(), self._machine_busy(), self._server()

    def stop(self, client_cpu: float) -> dict[str, float]:
        """`client_cpu`: the load generator's whole CPU time (start-up and warm-up included)."""
        wall = time.perf_counter() - self._t0
        busy = self._machine_busy() - self._busy0
        server = self._server() - self._server0
        other = max(0.0, busy - server - client_cpu)
        return {"wall": wall, "server_cpu": server, "other_cores": other / wall}


def load_level(
    port: int,
    server_pid: int,
    kind: str,
    clients: int,
    requests: int,
    max_seconds: float,
    warmup: int,
    seed: int,
) -> dict[str, Any]:
    """One load level, driven from a separate process (so the client's heap and imports stay out of the
    server's and this script's way), with the machine's load around it."""
    spec = {
        "port": port,
        "kind": kind,
        "clients": clients,
        "requests": requests,
        "max_seconds": max_seconds,
        "warmup": warmup,
        "seed": seed,
        "n_shoppers": N_SHOPPERS,
    }
    counters_before = scoring_counters(port)
    load_before = [round(x, 2) for x in os.getloadavg()]
    meter = CpuMeter(server_pid)
    meter.start()
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--drive", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=max_seconds * 2 + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed ({done.returncode}):\n{done.stderr[-2000:]}")
    got = json.loads(done.stdout)
    cpu = meter.stop(got["client_process_cpu_seconds"])
    counters_after = scoring_counters(port)
    latencies = np.array(got["latencies_ms"])
    n = len(latencies)
    row = {
        "endpoint": kind,
        "clients": clients,
        "requests": n,
        "errors": got["n_errors"],
        "error_examples": sorted(set(map(str, got["errors"])))[:5],
        "seconds": round(got["seconds"], 3),
        "throughput_rps": round(n / got["seconds"], 1),
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 3) for q in (50, 95, 99)},
        "max_ms": round(float(latencies.max()), 3),
        "server_cpu_ms_per_request": round(cpu["server_cpu"] / max(1, n + warmup) * 1000, 3),
        "client_cpu_ms_per_request": round(got["client_cpu_seconds"] / max(1, n) * 1000, 3),
        "other_processes_cores": round(cpu["other_cores"], 2),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "level_seconds": round(time.perf_counter() - t0, 1),
    }
    batches = counters_after[0] - counters_before[0]
    if kind == "recommendations" and batches > 0:  # warm-up included, as in the server's CPU
        row["mean_scoring_batch"] = round((counters_after[1] - counters_before[1]) / batches, 2)
    return row


def scoring_counters(port: int) -> tuple[int, int]:
    """(batches, requests) the server has scored so far, from /healthz (one worker's, with several)."""
    import httpx

    body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
    return int(body.get("scoring_batches", 0)), int(body.get("scored_requests", 0))


# ------------------------------------------------------------------------------------------------ the floors
def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 4) for q in (50, 95, 99)}


def floors(world: dict[str, Any], n_queries: int, seed: int) -> dict[str, Any]:
    """One shopper's top-10 without HTTP, one thread: a bare numpy matrix-vector product, a bare FAISS
    IndexFlatIP search, the model's full score of every item in numpy followed by a top-k, and the
    service's whole path (pseudonym, Feast read, the exact top-k of `Champion.top_for_history`,
    explanations)."""
    import faiss
    from threadpoolctl import threadpool_limits

    from ml.features import store as fs
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.serving import ranking
    from ml.serving.champion import build_champion
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

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
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

    with threadpool_limits(limits=1):  # one BLAS thread, as in the service
        return {
            "numpy_topk": _percentiles(time_each(numpy_top)),
            "faiss_flat_ip_topk": _percentiles(time_each(lambda q: index.search(q[None], K))),
            "full_score_topk": _percentiles(time_each(full_score_top)),
            "in_process_recommendation": _percentiles(time_each(service_path)),
        }


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
    for name in ("numpy", "faiss-cpu", "torch", "fastapi", "uvicorn", "pydantic", "mlflow", "feast", "vetted"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def busy(row: dict[str, Any]) -> bool:
    """Other work shared the cores during this level (measured from /proc/stat). The load average is only
    reported: it also counts this benchmark's own previous level, so it cannot tell a quiet machine."""
    return row["other_processes_cores"] > BUSY_OTHER_CORES


def markdown(report: dict[str, Any]) -> str:
    m, v, st = report["machine"], report["versions"], report["settings"]
    lines = [
        "# Serving benchmark",
        "",
        f"Measured {report['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), {m['platform']}, "
        f"Python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Load average (1, 5, 15 min) at the start / end: {report['load_average_before']} / "
        f"{report['load_average_after']}.",
        "",
        f"The service: `ml.serving.app.serve`, {st['workers']} uvicorn worker(s), on 127.0.0.1. Item vectors are "
        "random unit vectors (384 dims; the model's full score: dot / temperature + item bias + the behavioural "
        "part with feature weights "
        f"{st.get('feature_weights')}), so the figures measure the service, not the model's quality. Each request is one shopper (of "
        f"{N_SHOPPERS}, {HISTORY} recent items each in the Feast SQLite online store), k={K}. The load "
        "generator is a separate process (asyncio, one keep-alive connection per closed-loop client) on the "
        "same cores as the server. Recommendations waiting at the same moment are scored together "
        "(`ml.serving.batching`: one matrix product per batch), so the server's CPU per request falls as clients "
        "are added. `/search` rows are in their own table below. "
        "`/healthz` (no model, no key) is the floor of the HTTP stack itself.",
        "",
        f"Target: p99 < {TARGET_P99_MS:.0f} ms for `/recommendations` with {TARGET_CLIENTS} clients, no error.",
        "",
        "| items | endpoint | clients | requests | errors | p50 ms | p95 ms | p99 ms | max ms | req/s "
        "| server CPU ms/req | mean batch | other jobs (cores) | load before→after | target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    flagged = 0
    for size in report["sizes"]:
        for row in size["load"]:
            if row["endpoint"] in SEARCH_KINDS:
                continue
            target = ""
            if row["endpoint"] == "recommendations" and row["clients"] == TARGET_CLIENTS:
                target = "met" if row["p99_ms"] < TARGET_P99_MS and row["errors"] == 0 else "MISSED"
            mark = " (busy)" if busy(row) else ""
            flagged += bool(mark)
            lines.append(
                f"| {size['n_items']:,} | /{row['endpoint']} | {row['clients']} | {row['requests']} | "
                f"{row['errors']} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['max_ms']:.2f} | {row['throughput_rps']:.0f} | {row['server_cpu_ms_per_request']:.2f} | "
                f"{row['mean_scoring_batch'] if 'mean_scoring_batch' in row else ''} | "
                f"{row['other_processes_cores']:.2f} | {row['load_average_before'][0]:.2f}→"
                f"{row['load_average_after'][0]:.2f}{mark} | {target} |"
            )
    lines += [
        "",
        "Server CPU: the server processes' CPU time over the level divided by its requests (warm-up included). "
        "Mean batch: recommendation requests per scoring batch over the level (from /healthz; with several "
        "workers, one worker's). "
        "Other jobs: CPU used by every other process on the machine during the level, in cores (from "
        "/proc/stat, less the server's and the load generator's own time). Load: the 1-minute load average "
        "before and after the level (it also counts this benchmark's previous level).",
    ]
    lines += search_markdown(report)
    for size in report["sizes"]:
        runs = size.get("target_repeats") or []
        if len(runs) > 1:
            p99 = sorted(r["p99_ms"] for r in runs)
            met = sum(r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 for r in runs)
            quiet = sum(not busy(r) for r in runs)
            lines += [
                "",
                f"{size['n_items']:,} items, the target level run {len(runs)} times on the same server (the first "
                f"is the row above): p99 {p99[0]:.2f} / {p99[len(p99) // 2]:.2f} / {p99[-1]:.2f} ms (min / median / "
                f"max), at {min(r['throughput_rps'] for r in runs):.0f}-{max(r['throughput_rps'] for r in runs):.0f} "
                f"req/s, {sum(r['errors'] for r in runs)} errors; target met in {met} of {len(runs)} "
                f"({quiet} run(s) not busy).",
            ]
    if flagged:
        lines += [
            "",
            f"**Note: {flagged} level(s) marked (busy) ran while other work shared the {m['cores']} cores "
            f"(other jobs above {BUSY_OTHER_CORES} cores): their latencies are inflated by that work, not by the service alone. Rerun on a quiet "
            "machine for the reference figures.**",
        ]
    lines += [
        "",
        "Floors: one shopper's top-10, one thread, no HTTP (p50 / p95 / p99 ms).",
        "",
        "| items | bare numpy (dot + top-k) | bare FAISS IndexFlatIP | full model score of every item + top-k "
        "(numpy, dense) | service path without HTTP (pseudonym + Feast + exact top-k + explanation) |",
        "|---:|---|---|---|---|",
    ]
    keys = ("numpy_topk", "faiss_flat_ip_topk", "full_score_topk", "in_process_recommendation")
    for size in report["sizes"]:
        f = size["floors"]
        if not f:  # a size measured with --search-only
            continue
        cells = [f"{f[key]['p50_ms']:.2f} / {f[key]['p95_ms']:.2f} / {f[key]['p99_ms']:.2f}" for key in keys]
        lines.append(f"| {size['n_items']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reading: with closed-loop clients, latency is about clients / throughput (Little's law), so the "
        "p99 target at 16 clients is a throughput target (about 16 / 20 ms = 800 req/s and a tail to match):",
        "",
    ]
    for size in report["sizes"]:
        recs = {r["clients"]: r for r in size["load"] if r["endpoint"] == "recommendations"}
        if len(recs) < 2:
            continue
        best = max(recs.values(), key=lambda r: r["throughput_rps"])
        health = next((r for r in size["load"] if r["endpoint"] == "healthz"), None)
        lines.append(
            f"- {size['n_items']:,} items: {recs[min(recs)]['throughput_rps']:.0f} req/s with {min(recs)} client(s), "
            f"at best {best['throughput_rps']:.0f} ({best['clients']} clients), "
            f"{best['server_cpu_ms_per_request']:.2f} ms of server CPU per request, against "
            f"{size['floors']['in_process_recommendation']['p50_ms']:.2f} ms (p50) for the same work in process"
            + (
                f" and {health['server_cpu_ms_per_request']:.2f} ms for a /healthz request (the HTTP stack)."
                if health
                else "."
            )
        )
    lines += [
        "",
        "Server start to healthy (load, index, warm-up): "
        + ", ".join(f"{s['n_items']:,} items {s['startup_seconds']:.1f} s" for s in report["sizes"])
        + ".",
        "",
        "Written by `benchmarks/serving.py` (`.venv/bin/python benchmarks/serving.py`); the JSON next to this "
        "file has every figure.",
        "",
    ]
    return "\n".join(lines)


def search_markdown(report: dict[str, Any]) -> list[str]:
    """The /search table: the exported int8 encoder (ONNX Runtime) and torch, side by side, on the same world."""
    rows = [(size["n_items"], r) for size in report["sizes"] for r in size["load"] if r["endpoint"] in SEARCH_KINDS]
    if not rows:
        return []
    when = report.get("search_measured", report["date"])
    lines = [
        "",
        f"## /search ({TARGET_CLIENTS} clients; measured {when})",
        "",
        "The served search ranking (`ml.serving.ranking.search`): the query encoded (the version's exported int8 "
        "encoder on ONNX Runtime behind the query cache, or torch when the server runs with "
        "`VETTED_QUERY_ENCODER=torch`), blended with the shopper's history vector (Feast), the dense top by the "
        "model's exact score (`ml.search.dense`), BM25's top from the query words' posting lists, fused by RRF. "
        "Queries: two or three words of " + str(len(QUERY_WORDS)) + " (some in the titles, some in none). "
        "*new*: every request's text differs (a number appended), so the query cache never answers; *repeated*: "
        f"drawn from {SEARCH_POOL:,} queries by a Zipf law (exponent {SEARCH_ZIPF}), as head queries repeat.",
        "",
        "Targets: p99 < " + " and < ".join(f"{t:.0f} ms at {n:,} items" for n, t in SEARCH_TARGET_P99_MS.items())
        + ", 0 errors, with the exported encoder.",
        "",
        "| items | encoder | queries | requests | errors | p50 ms | p95 ms | p99 ms | max ms | req/s "
        "| server CPU ms/req | other jobs (cores) | target |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, r in rows:
        target = SEARCH_TARGET_P99_MS.get(n)
        verdict = ""
        if target is not None and r.get("query_encoder", "onnx") == "onnx":
            verdict = "met" if r["p99_ms"] < target and r["errors"] == 0 else "MISSED"
        queries = "repeated" if r["endpoint"] == "search_repeated" else "new"
        lines.append(
            f"| {n:,} | {r.get('query_encoder', 'torch')} | {queries} | {r['requests']} | {r['errors']} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | "
            f"{r['throughput_rps']:.0f} | {r['server_cpu_ms_per_request']:.2f} | {r['other_processes_cores']:.2f}"
            f"{' (busy)' if busy(r) else ''} | {verdict} |"
        )
    return lines


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
    rows, repeats, startup = _serve_levels(home, n, args, plan, "onnx", target_repeats=not args.search_only)
    if args.search_requests:  # the torch encoder, for comparison: the cache cannot help it either
        torch_rows, _, _ = _serve_levels(home, n, args, [("search", TARGET_CLIENTS, args.search_requests, 50)],
                                         "torch", target_repeats=False)
        rows += torch_rows
    size_report = {
        "n_items": n,
        "startup_seconds": round(startup, 1),
        "load": rows,
        "target_repeats": repeats,
        "floors": {} if args.search_only else floors(world, args.floor_queries, args.seed),
    }
    log.info("%d items floors %s", n, size_report["floors"])
    return size_report


def _serve_levels(home: Path, n: int, args: argparse.Namespace, plan: list[tuple[str, int, int, int]],
                  query_encoder: str, target_repeats: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Start the server with `query_encoder`, run the plan's levels (and the target level's repeats), stop it."""
    port, log_path = free_port(), home / f"server-{query_encoder}.log"
    proc = start_server(home, port, log_path, workers=args.workers, encoder=query_encoder)
    rows: list[dict[str, Any]] = []
    repeats: list[dict[str, Any]] = []
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
            row = load_level(port, proc.pid, "recommendations", TARGET_CLIENTS, args.requests, args.max_seconds,
                             100, args.seed + 50_000 + r)
            log.info("%d items target repeat %d %s", n, r, {k: row[k] for k in row if k != "error_examples"})
            repeats.append(row)
    finally:
        stop_server(proc)
    return rows, repeats, startup


def merge_search_rows(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`--search-only`: the previous report with its /search rows replaced by the new run's (per size)."""
    merged = json.loads(json.dumps(previous))
    by_size = {s["n_items"]: s for s in new["sizes"]}
    for size in merged["sizes"]:
        fresh = by_size.pop(size["n_items"], None)
        if fresh is not None:
            size["load"] = [r for r in size["load"] if r["endpoint"] not in SEARCH_KINDS] + fresh["load"]
    merged["sizes"] += list(by_size.values())
    merged["search_measured"] = new["date"]
    merged["search_machine_load"] = [new["load_average_before"], new["load_average_after"]]
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--drive"]:  # the load generator's process (see load_level)
        return drive_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level (1 client: a quarter)")
    parser.add_argument(
        "--search-requests", type=int, default=600, help="/search requests per level at 16 clients (0: skip)"
    )
    parser.add_argument("--search-only", action="store_true",
                        help="only the /search levels; their rows replace those of the existing serving.json")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per level")
    parser.add_argument("--floor-queries", type=int, default=300)
    parser.add_argument(
        "--target-repeats", type=int, default=5, help="runs of the target level (recommendations, 16 clients)"
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
    if args.search_only:
        report = merge_search_rows(json.loads((args.out / "serving.json").read_text()), report)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving.md").write_text(markdown(report))
    log.info("wrote %s and %s in %.0f s", args.out / "serving.json", args.out / "serving.md", report["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
