"""Ingestion under hostile input: does any raw shopper id or planted PII reach the lake or the quarantine?

A seeded generator writes `n_rows` rows for each contract table, about a third of them well formed and the rest
each broken one way: wrong types (floats, lists, bools, bytes where text belongs), NaN and inf prices and
timestamps, 1 MB strings, lone surrogates, integer epoch timestamps (seconds), events naming unknown items,
events after the ingest date, unknown event and request kinds, and PII (e-mail addresses, phone numbers, IP
addresses, payment cards) planted in every column, keys and extra columns a source might bring included. The
tables go through the real `ml.data.ingest.ingest` (keyed pseudonyms, the Presidio scrubber) into a temporary
lake; then every cell of every lake and quarantine parquet file is searched for the raw user ids and for each
planted PII value (whole, and without its first three characters, to catch a half-replaced value).

Per table and in total: rows read, accepted, quarantined, deferred (read = accepted + quarantined + deferred),
raw ids found, PII found (both should be 0), and the columns dropped.

    .venv/bin/python benchmarks/robustness_ingest.py [--seed 0] [--rows 2000]

Writes benchmarks/results/robustness-ingest.md (and .json). `run()` and `markdown()` are imported by
benchmarks/robustness.py.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BENCHMARK_PSEUDONYM_KEY, machine, write  # noqa: E402

from ml.data import lake  # noqa: E402
from ml.data.ingest import ingest  # noqa: E402
from ml.data.sources import RawTables  # noqa: E402
from ml.privacy.pii import PIIScrubber  # noqa: E402
from ml.privacy.pseudonymize import Pseudonymizer  # noqa: E402

NAME = "robustness-ingest"
INGEST_DATE = "2026-03-01"
TABLES = ("items", "users", "events", "privacy_requests")
KEYS = ("rows_read", "accepted", "quarantined", "deferred", "raw_ids_found", "pii_found")
RAW_ID = re.compile(r"shopper-\d{5}")  # every raw user id the generator writes has this form
HUGE = 1_000_000  # characters in a huge string
# reserved or fictional values only: example.* domains, documentation IP ranges, card-network test numbers
EMAILS = ("jane.roe{k}@example.com", "j.doe+{k}@example.org", "shopper{k}@mail.example.net")
PHONES = ("+1 212-555-{k:04d}", "+44 20 7946 {k:04d}", "(212) 555-{k:04d}", "+49 30 1234{k:04d}")
IPS = ("203.0.113.{b}", "198.51.100.{b}", "2001:db8::{k:x}")
CARDS = ("4111 1111 1111 1111", "5555555555554444", "4012-8888-8888-1881")
LONE_SURROGATE = "\ud800"


class _Planter:
    """Draws PII values and remembers each one planted, so the scan knows what to look for."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.planted: set[str] = set()
        self.count = 0

    def value(self) -> str:
        self.count += 1
        k = self.count
        kind = self.rng.integers(4)
        pool = (EMAILS, PHONES, IPS, CARDS)[kind]
        value = pool[self.rng.integers(len(pool))].format(k=k % 10_000, b=k % 250 + 1)
        self.planted.add(value)
        return value

    def text(self, words: str) -> str:
        return f"{words} {self.value()}" if self.rng.random() < 0.5 else f"{self.value()} {words}"


def _hostile(rng: np.random.Generator, pii: _Planter, good: Any, kinds: tuple[str, ...]) -> Any:
    """One bad value for a cell whose good value is `good`."""
    kind = kinds[rng.integers(len(kinds))]
    if kind == "pii":
        return pii.text(str(good))
    if kind == "float":
        return float(rng.choice([1.5, np.nan, np.inf, -np.inf]))
    if kind == "list":
        return [str(good), pii.value()]
    if kind == "bool":
        return bool(rng.integers(2))
    if kind == "bytes":
        return pii.text(str(good)).encode("utf-8")
    if kind == "huge":
        return pii.value() + " " + "x" * HUGE
    if kind == "surrogate":
        return f"{good} {LONE_SURROGATE} {pii.value()}"
    if kind == "empty":
        return None
    raise ValueError(kind)


TEXT_BAD = ("pii", "pii", "pii", "float", "list", "bool", "bytes", "huge", "surrogate", "empty")


def _mangle(
    rng: np.random.Generator,
    pii: _Planter,
    frame: pd.DataFrame,
    columns: dict[str, tuple[str, ...]],
    share_good: float = 1 / 3,
) -> pd.DataFrame:
    """Break one cell in each of about (1 - share_good) of the rows; huge strings in at most 1% of rows."""
    frame = frame.astype(object)
    names = list(columns)
    huge_left = max(1, len(frame) // 100)
    for row in range(len(frame)):
        if rng.random() < share_good:
            continue
        column = names[rng.integers(len(names))]
        kinds = columns[column]
        if huge_left <= 0:
            kinds = tuple(k for k in kinds if k != "huge") or ("pii",)
        value = _hostile(rng, pii, frame.iat[row, frame.columns.get_loc(column)], kinds)
        if isinstance(value, str) and len(value) > HUGE:
            huge_left -= 1
        frame.iat[row, frame.columns.get_loc(column)] = value
    return frame


def generate(seed: int = 0, n_rows: int = 2000) -> tuple[RawTables, set[str]]:
    """The four hostile tables (as an adapter would hand them over) and the PII values planted in them."""
    rng = np.random.default_rng(seed)
    pii = _Planter(rng)
    n = n_rows
    items = pd.DataFrame(
        {
            "item_id": [f"i{k:05d}" for k in range(n)],
            "title": [f"Item {k}" for k in range(n)],
            "description": [f"A fine thing, number {k}." for k in range(n)],
            "brand": [f"Brand {k % 40}" for k in range(n)],
            "category": [f"Category {k % 12}" for k in range(n)],
            "price": rng.uniform(1, 500, n).round(2),
            "seller_note": [pii.text("ask the seller") if rng.random() < 0.5 else "ok" for _ in range(n)],
        }
    )
    items = _mangle(
        rng,
        pii,
        items,
        {
            "item_id": ("pii",),
            "title": TEXT_BAD,
            "description": TEXT_BAD,
            "brand": TEXT_BAD,
            "category": TEXT_BAD,
            "price": ("float", "bool", "list", "pii", "empty"),
        },
    )
    users = pd.DataFrame(
        {
            "user_id": [f"shopper-{k:05d}" for k in range(n)],
            "gender": rng.choice(["f", "m", "x"], n).astype(object),
            "age_band": rng.choice(["<20", "20-30", "30-40", "60+"], n).astype(object),
            "region": rng.choice(["urban", "rural"], n).astype(object),
            "contact": [pii.value() if rng.random() < 0.5 else None for _ in range(n)],  # an attribute that is PII
        }
    )
    users = _mangle(
        rng,
        pii,
        users,
        {
            "user_id": ("float", "bool", "bytes", "empty"),
            "gender": TEXT_BAD,
            "age_band": TEXT_BAD,
            "region": TEXT_BAD,
        },
    )
    t0 = pd.Timestamp("2026-01-05", tz="UTC")
    cutoff = pd.Timestamp(INGEST_DATE, tz="UTC") + pd.Timedelta(days=1)
    offsets = rng.uniform(0, (cutoff - t0).total_seconds() * 1.2, n)  # about one in six after the ingest date
    stamps = [t0 + pd.Timedelta(seconds=float(s)) for s in offsets]
    kinds = rng.choice(["view", "click", "add_to_cart", "purchase", "rating", "search"], n)
    events = pd.DataFrame(
        {
            "event_id": [f"e{k:07d}" for k in range(n)],
            "user_id": [f"shopper-{rng.integers(n):05d}" for _ in range(n)],
            "item_id": [None if kind == "search" else f"i{rng.integers(n):05d}" for kind in kinds],
            "event_type": kinds.astype(object),
            "query": [
                pii.text("blue lamp")
                if kind == "search" and rng.random() < 0.3
                else ("blue lamp" if kind == "search" else None)
                for kind in kinds
            ],
            # ISO text, or an integer epoch in seconds (the contract's unit for numbers)
            "ts": [s.isoformat() if rng.random() < 0.7 else int(s.timestamp()) for s in stamps],
            "client_ip": [pii.value() for _ in range(n)],
            "user_agent": [pii.text("Mozilla/5.0") if rng.random() < 0.2 else "Mozilla/5.0" for _ in range(n)],
        }
    )
    events = _mangle(
        rng,
        pii,
        events,
        {
            "event_id": ("pii", "float", "bool", "empty"),
            "user_id": ("float", "bool", "bytes", "empty"),
            "item_id": ("pii", "float", "bool"),
            "event_type": ("pii", "bool", "float"),
            "query": TEXT_BAD,
            "ts": ("float", "bool", "pii", "bytes", "list"),
        },
    )
    unknown = rng.random(n) < 0.05  # events naming items the catalog lacks
    events.loc[unknown & events["item_id"].notna().to_numpy(), "item_id"] = "i99999"
    requests = pd.DataFrame(
        {
            "user_id": [f"shopper-{rng.integers(n):05d}" for _ in range(n)],
            "request": rng.choice(["opt_out", "delete"], n, p=[0.8, 0.2]).astype(object),
            "ts": [t0.isoformat() if rng.random() < 0.5 else int(t0.timestamp()) for _ in range(n)],
            "note": [pii.value() for _ in range(n)],
        }
    )
    requests = _mangle(
        rng,
        pii,
        requests,
        {
            "user_id": ("float", "bool", "bytes", "empty"),
            "request": ("pii", "bool", "float"),
            "ts": ("float", "bool", "pii", "bytes"),
        },
    )
    raw = RawTables(
        name="hostile",
        items=items,
        users=users,
        events=events,
        privacy_requests=requests,
        split_time=pd.Timestamp("2026-02-15", tz="UTC"),
    )
    return raw, pii.planted


def _needles(planted: set[str]) -> list[str]:
    """Each planted value, and the value without its first three characters (a half-replaced value)."""
    out = set(planted)
    out.update(v[3:] for v in planted if len(v) > 10)
    return sorted(out, key=len, reverse=True)


def _cells(frame: pd.DataFrame) -> list[str]:
    return [str(v) for column in frame.columns for v in frame[column].tolist() if v is not None]


def scan(lake_dir: Path, planted: set[str]) -> dict[str, dict[str, int]]:
    """Per table, the cells (lake and quarantine rows of that table) holding a raw user id or planted PII."""
    finder = re.compile("|".join(re.escape(v) for v in _needles(planted)))
    found = {t: {"raw_ids_found": 0, "pii_found": 0, "cells_scanned": 0} for t in TABLES}

    def count(table: str, cells: list[str]) -> None:
        found[table]["cells_scanned"] += len(cells)
        found[table]["raw_ids_found"] += sum(bool(RAW_ID.search(c)) for c in cells)
        found[table]["pii_found"] += sum(bool(finder.search(c)) for c in cells)

    for table in TABLES:
        for path in lake.partitions(lake_dir, table):
            count(table, _cells(pq.read_table(path).to_pandas()))
    for path in lake.partitions(lake_dir, lake.QUARANTINE):
        frame = pq.read_table(path).to_pandas()
        for table, rows in frame.groupby("table"):
            count(str(table), _cells(rows))
    return found


def run(seed: int = 0, n_rows: int = 2000) -> dict[str, Any]:
    """Generate, ingest and scan; per table and in total the counts named in the module docstring."""
    raw, planted = generate(seed, n_rows)
    with tempfile.TemporaryDirectory(prefix="vetted-robustness-ingest-") as folder:
        lake_dir = Path(folder) / "lake"
        start = time.perf_counter()
        result = ingest(raw, lake_dir, Pseudonymizer(BENCHMARK_PSEUDONYM_KEY.encode()), PIIScrubber(), INGEST_DATE)
        seconds = time.perf_counter() - start
        found = scan(lake_dir, planted)
    tables: dict[str, dict[str, int]] = {}
    for table in TABLES:
        tables[table] = {
            "rows_read": result.read[table],
            "accepted": result.accepted[table],
            "quarantined": result.quarantined[table],
            "deferred": result.deferred[table],
            "raw_ids_found": found[table]["raw_ids_found"],
            "pii_found": found[table]["pii_found"],
            "cells_scanned": found[table]["cells_scanned"],
            "dropped_columns": len(result.dropped_columns.get(table, [])),
        }
    total = {key: sum(t[key] for t in tables.values()) for key in (*KEYS, "cells_scanned", "dropped_columns")}
    reasons = Counter(result.quarantine_reasons)
    return {
        "seed": seed,
        "n_rows": n_rows,
        "ingest_date": INGEST_DATE,
        "tables": tables,
        "total": total,
        "pii_values_planted": len(planted),
        "pii_replaced": result.pii_replaced,
        "dropped_columns": result.dropped_columns,
        "quarantine_reasons": dict(reasons.most_common(15)),
        "ingest_seconds": round(seconds, 1),
        "machine": machine(),
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as a markdown report."""
    m = result["machine"]
    lines = [
        "# Ingestion robustness",
        "",
        f"{result['n_rows']} hostile rows per table (seed {result['seed']}), ingested for {result['ingest_date']} "
        f"through `ml.data.ingest.ingest`; {result['pii_values_planted']} distinct PII values planted in every "
        "column, keys and extra columns included. Every cell of the lake and quarantine files was searched for "
        "raw user ids and planted PII. read = accepted + quarantined + deferred.",
        "",
        "| table | read | accepted | quarantined | deferred | raw ids found | PII found | cells scanned | "
        "dropped columns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*result["tables"].items(), ("**total**", result["total"])]
    for table, t in rows:
        lines.append(
            f"| {table} | {t['rows_read']} | {t['accepted']} | {t['quarantined']} | {t['deferred']} | "
            f"{t['raw_ids_found']} | {t['pii_found']} | {t['cells_scanned']} | {t['dropped_columns']} |"
        )
    lines += [
        "",
        f"- Columns dropped (not in the contract): {result['dropped_columns'] or 'none'}.",
        f"- PII replaced by the scrubber: {result['pii_replaced']}.",
        f"- Ingestion took {result['ingest_seconds']} s.",
        "",
        "Most frequent quarantine reasons:",
        "",
        "| reason | rows |",
        "|---|---|",
    ]
    lines += [f"| {reason} | {n} |" for reason, n in result["quarantine_reasons"].items()]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}; {m['date']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.seed, args.rows)
    write(NAME, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
