"""Shared bits of the benchmarks: machine facts, peak-memory sampling, result files."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARK_PSEUDONYM_KEY = "vetted-benchmarks-pseudonym-key-0123456789"  # not a secret: benchmark data only
PACKAGES = (
    "torch",
    "transformers",
    "opacus",
    "feast",
    "mlflow",
    "evidently",
    "apache-airflow",
    "faiss-cpu",
    "onnxruntime",
)


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_flags": cpu_flags(),
        "versions": versions,
    }


# the vector instructions int8 and float kernels choose between (ONNX Runtime's int8 matrix products, FAISS,
# torch): figures of the int8 query encoder can differ in the last digits between machines that differ here
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str] | None:
    """Which of CPU_FLAGS this machine's CPU has (Linux: /proc/cpuinfo); None where that cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    return [f for f in CPU_FLAGS if f in present]


@contextmanager
def measure(out: dict[str, Any], interval: float = 0.05):
    """Wall time and peak resident memory (this process, sampled) of the block, into `out`."""
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = round(time.perf_counter() - start, 2)
        done.set()
        thread.join()
        out["peak_rss_mb"] = round(max(peak[0], proc.memory_info().rss) / 2**20, 1)


def write(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
    (RESULTS / f"{name}.md").write_text(markdown)


def new_context(name: str, overrides: dict[str, Any], home: Path | None = None):
    """A fresh run context (and VETTED_HOME unless given) for one benchmark run."""
    import tempfile

    from ml.config import RunConfig, Settings
    from ml.keys import PSEUDONYM_KEY
    from ml.pipeline.context import RunContext

    home = home or Path(tempfile.mkdtemp(prefix=f"vetted-bench-{name}-"))
    os.environ["VETTED_HOME"] = str(home)
    os.environ["VETTED_DEMO"] = "1"
    # one key for every benchmark run: the membership-audit shoppers are drawn among pseudonyms, so a fresh
    # demo key per run would draw another audit split and move every figure between runs of the same code
    os.environ.setdefault(PSEUDONYM_KEY.env, BENCHMARK_PSEUDONYM_KEY)
    return RunContext.create(Settings.from_env(), RunConfig.from_dict(overrides), name=name)


def branch_context(base, name: str, changes: dict[str, Any]):
    """A sibling run folder that reuses `base`'s ingestion and feature outputs with other settings."""
    import shutil

    from ml.config import RunConfig
    from ml.pipeline.context import RunContext

    settings = base.config.to_dict()
    # a change to the DP settings keeps the base's other DP settings
    cfg = RunConfig.from_dict({**settings, **changes, "dp": {**settings["dp"], **changes.get("dp", {})}})
    ctx = RunContext.create(base.settings, cfg, name=name)
    # the hold-out's search cases too: the evaluate stage reads them (an empty frame where the source has no queries)
    for f in (
        "ingest.json",
        "features.json",
        "train_set.parquet",
        "cases.parquet",
        "train_sequences.parquet",
        "search_cases.parquet",
    ):
        shutil.copy(base.path(f), ctx.path(f))
    return ctx


def trained_branch(base, name: str, changes: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """`branch_context` trained (timed: seconds and peak RSS) and evaluated; (its context, the train timing)."""
    from ml.pipeline import stages

    ctx = branch_context(base, name, changes)
    timing: dict[str, Any] = {}
    with measure(timing):
        stages.train(ctx)
    stages.evaluate(ctx)
    return ctx, timing
