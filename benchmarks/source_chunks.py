"""Memory of reading a shop's wide events table: the `files` and `sql` sources (chunks cut to the contract's
columns) beside loading the whole table with pandas, which is what reading without chunks would hold.

A seeded table of `--rows` events carries the contract's six columns and `--extra` text columns of 200 characters
each that the contract does not name (what a shop's log holds beside them: user agents, payloads, notes). It is
written as a folder of parquet parts and as a SQLite table; each reader then runs in a fresh Python process, which
reports its peak resident memory (sampled every 10 ms) above what it held after its imports, and its wall time.

    .venv/bin/python benchmarks/source_chunks.py [--rows 200000] [--extra 6]

Writes benchmarks/results/source-chunks.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write  # noqa: E402

READERS = {
    "files source (parquet folder)": "from ml.data.files import load; t = load(FOLDER).events",
    "sql source (SQLite)": "from ml.data.sql import load; t = load(URL).events",
    "pandas, whole table (parquet folder)": "import pandas as pd; t = pd.read_parquet(FOLDER + '/events')",
    "pandas, whole table (SQLite)": "import pandas as pd; t = pd.read_sql_table('events', URL)",
}
PROBE = """
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/benchmarks")
import psutil, pandas, pyarrow.dataset, sqlalchemy, ml.data.files, ml.data.sql
from common import measure
FOLDER, URL = {folder!r}, {url!r}
before = psutil.Process().memory_info().rss / 2**20
out = {{}}
with measure(out, interval=0.01):
    {code}
print(len(t), out["peak_rss_mb"] - before, out["seconds"])
"""


def make_events(rows: int, extra: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    pool = ["".join(rng.choice(letters, 200)) for _ in range(997)]  # distinct text, no cheap dictionary of one
    frame = pd.DataFrame(
        {
            "event_id": [f"e{i:09d}" for i in range(rows)],
            "user_id": [f"u{n:06d}" for n in rng.integers(0, rows // 20 + 1, rows)],
            "item_id": [f"i{n:05d}" for n in rng.integers(0, 5000, rows)],
            "event_type": rng.choice(["view", "click", "purchase"], rows),
            "query": None,
            "ts": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.sort(rng.integers(0, 86400 * 90, rows)), unit="s"),
        }
    )
    for k in range(extra):
        frame[f"payload_{k}"] = [pool[(i * (k + 3)) % len(pool)] for i in range(rows)]
    return frame


def run(rows: int, extra: int) -> dict[str, Any]:
    import sqlalchemy as sa

    out: dict[str, Any] = {"rows": rows, "extra_columns": extra, "readers": {}}
    with tempfile.TemporaryDirectory(prefix="vetted-chunks-") as tmp:
        folder, url = Path(tmp) / "shop", f"sqlite:///{tmp}/shop.db"
        events = make_events(rows, extra)
        (folder / "events").mkdir(parents=True)
        for n, part in enumerate(events.iloc[i::8] for i in range(8)):
            part.to_parquet(folder / "events" / f"part-{n}.parquet", index=False)
        items = pd.DataFrame({"item_id": [f"i{n:05d}" for n in range(5000)], "title": "thing"})
        items.to_parquet(folder / "items.parquet", index=False)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            events.to_sql("events", conn, index=False, chunksize=20_000)
            items.to_sql("items", conn, index=False)
        engine.dispose()
        out["parquet_mb"] = round(sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 2**20, 1)
        out["in_memory_mb"] = round(events.memory_usage(deep=True).sum() / 2**20, 1)
        del events
        for name, code in READERS.items():
            probe = PROBE.format(root=str(ROOT), folder=str(folder), url=url, code=code)
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
            n, peak_mb, seconds = done.stdout.split()
            out["readers"][name] = {
                "rows": int(n),
                "peak_mb": round(float(peak_mb)),
                "seconds": round(float(seconds), 1),
            }
            print(name, out["readers"][name], flush=True)
    return out


def markdown(result: dict[str, Any], env: dict[str, Any]) -> str:
    lines = [
        "# Reading a wide events table: chunks of contract columns vs the whole table",
        "",
        f"{result['rows']:,} events, the contract's 6 columns plus {result['extra_columns']} text columns of 200 "
        f"characters the contract does not name ({result['in_memory_mb']} MB as a pandas frame, "
        f"{result['parquet_mb']} MB of parquet). Each reader in a fresh process; peak resident memory above the "
        "process after its imports (sampled every 10 ms).",
        "",
        "| reader | rows | peak memory (MB) | seconds |",
        "|---|---|---|---|",
    ]
    for name, r in result["readers"].items():
        lines.append(f"| {name} | {r['rows']:,} | {r['peak_mb']} | {r['seconds']} |")
    lines += [
        "",
        "The sources hold the contract's columns of every row (their memory grows with the rows, not with the "
        "shop's other columns); the whole-table loads hold every column, as `pd.read_parquet` and "
        "`pd.read_sql_table` without a column list do.",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_gb']} GB, Python {env['python']}, "
        f"{env['date']}; load average (1 min) {result['load_average'][0]} at the start, {result['load_average'][1]} at "
        "the end (other jobs on the machine slow the seconds, not the memory).",
        "",
        "Produced by `benchmarks/source_chunks.py`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--extra", type=int, default=6)
    args = parser.parse_args()
    start_load = os.getloadavg()[0]
    result = run(args.rows, args.extra)
    result["load_average"] = [round(start_load, 2), round(os.getloadavg()[0], 2)]
    env = machine()
    write("source-chunks", {"result": result, "machine": env}, markdown(result, env))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
