"""The serving benchmark's load generator: closed-loop keep-alive HTTP/1.1 clients in their own process, and the
CPU the server, the generator and everything else on the machine used meanwhile.

`load_level` runs one level: it starts this file as a separate process (`--drive SPEC`, so the client's heap and
imports stay out of the server's and the benchmark's way), where N asyncio clients on raw sockets each send one
request, read the whole answer and send the next, within a request budget and a time bound; a failed exchange is
an error, and the client reconnects. The level's row holds the latencies' percentiles, the errors, the server's
CPU per request and the CPU other processes used (the machine may be shared).

/search queries (`search_query`): two or three words, some in the catalogue's titles and some in none; "search":
every text new (a number appended), so the query cache never answers; "search_repeated": drawn from a pool by a
Zipf law, as a shop's head queries repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_world import API_KEY, N_SHOPPERS, K  # noqa: E402

# /search queries: words of the catalogue's titles and others no title holds, two or three of them. "search":
# every request's text is new (a number appended), so the query cache never answers: the encoder's full cost.
# "search_repeated": drawn from a pool by a Zipf law, as a shop's head queries repeat, so the cache answers some.
QUERY_WORDS = [
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
    "running",
    "winter",
    "warm",
    "small",
    "large",
    "kids",
    "gift",
    "set",
    "cheap",
    "best",
]
SEARCH_KINDS = ("search", "search_repeated")
SEARCH_POOL = 2000
SEARCH_ZIPF = 1.1


_ZIPF_CUMULATIVE = np.cumsum(np.arange(1, SEARCH_POOL + 1, dtype=float) ** -SEARCH_ZIPF).tolist()


def search_query(kind: str, rnd: random.Random) -> str:
    if kind == "search_repeated":  # the pool's query of a Zipf-drawn rank (the same text for a rank every time)
        rank = rnd.choices(range(SEARCH_POOL), cum_weights=_ZIPF_CUMULATIVE)[0]
        pool = random.Random(rank)
        return " ".join(pool.choice(QUERY_WORDS) for _ in range(pool.randint(2, 3)))
    return " ".join(rnd.choice(QUERY_WORDS) for _ in range(rnd.randint(2, 3))) + f" {rnd.randrange(10**9)}"


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


if __name__ == "__main__":
    if sys.argv[1:2] != ["--drive"] or len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} --drive SPEC_JSON (started by load_level)")
    sys.exit(drive_main(sys.argv[2]))
