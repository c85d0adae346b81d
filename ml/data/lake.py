"""The lake: parquet tables partitioned by ingestion date.

Layout: `<lake>/<table>/ingest_date=YYYY-MM-DD/part.parquet`. Writing a date replaces that date's
partition whole (write to a temporary file, then rename), and rows are sorted by the table's key first,
so re-running a date rewrites it to the same content. Reading unions every partition and keeps, for
each key, the row of the newest partition; `as_of` limits a read to the partitions of that date and
earlier, so a backfilled run sees the lake as it was on its own date, not rows ingested after it.

Privacy requests are the exception to "replaces whole": they are an append-only ledger. Writing a date's
requests (`append_privacy_requests`) keeps every request that date's partition already holds, so no re-run,
backfill or change of source loses an opt-out or a deletion once received; re-running with the same requests
still rewrites the same bytes. Only `purge_users` removes requests (a deleted shopper's opt-outs: the deletion
itself stays).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml.data.schema import KEYS, TABLES, empty

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
_SORT = {
    "items": ["item_id"],
    "users": ["user_id"],
    "events": ["event_id"],
    "privacy_requests": ["user_id", "request", "ts"],
    QUARANTINE: ["table", "reason", "row_number"],
}


def check_date(ingest_date: str) -> str:
    """`ingest_date` if it is a real YYYY-MM-DD date; a clear error otherwise (it becomes a folder name)."""
    try:
        if isinstance(ingest_date, str) and len(ingest_date) == 10:
            return date.fromisoformat(ingest_date).isoformat()
    except ValueError:
        pass
    raise ValueError(f"ingest date {ingest_date!r} is not a YYYY-MM-DD date")


def partition_path(lake: Path, table: str, ingest_date: str) -> Path:
    return lake / table / f"ingest_date={check_date(ingest_date)}" / "part.parquet"


def partition_date(path: Path) -> str:
    """The ingest date of a partition file (`.../ingest_date=YYYY-MM-DD/part.parquet`)."""
    return path.parent.name.split("=", 1)[1]


def write_partition(lake: Path, table: str, ingest_date: str, df: pd.DataFrame) -> Path:
    """Replace one table's partition for `ingest_date` atomically; return its path."""
    path = partition_path(lake, table, ingest_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [c for c in _SORT.get(table, []) if c in df.columns]
    if keys:
        df = df.sort_values(keys, kind="mergesort")
    df = df.reset_index(drop=True)
    if table == QUARANTINE:
        df = as_text(df)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)
    return path


def _text(value: object, max_chars: int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
    else:
        text = str(value)
    # a lone surrogate cannot be stored as UTF-8: it becomes "?"
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    if max_chars is not None and len(text) > max_chars:
        text = f"{text[:max_chars]}[... {len(text) - max_chars} more characters cut]"
    return text


def as_text(df: pd.DataFrame, max_chars: int | None = None) -> pd.DataFrame:
    """Every value as text (missing stays None): quarantined rows mix types as read, so they are stored as text,
    nothing coerced; bytes are decoded (invalid bytes and lone surrogates become replacement characters) and,
    with `max_chars`, longer texts are cut (their reason says how long they were)."""
    df = df.astype(object).where(df.notna(), None)
    return df.map(lambda v: _text(v, max_chars))


REQUEST_COLUMNS = ("user_id", "request", "ts")


def append_privacy_requests(lake: Path, ingest_date: str, requests: pd.DataFrame) -> Path:
    """Add `requests` (pseudonymized, validated) to the date's ledger partition; return its path.

    The partition becomes the union of what it held and `requests`, one row per (user_id, request, ts): a
    re-run whose source carries fewer or other requests adds to the ledger and never shrinks it (a smaller
    list would give opted-out or deleted shoppers personalized answers again, as serving reads this table)."""
    missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"privacy requests lack column(s) {missing}; they have {list(requests.columns)}")
    path = partition_path(lake, "privacy_requests", ingest_date)
    columns = list(REQUEST_COLUMNS)
    held = pq.read_table(path).to_pandas()[columns] if path.exists() else requests[columns].iloc[:0]
    ledger = pd.concat([held, requests[columns]], ignore_index=True)
    ledger["ts"] = pd.to_datetime(ledger["ts"], utc=True, format="mixed").astype("datetime64[ns, UTC]")
    ledger = ledger.drop_duplicates(columns)
    kept_from_before = len(held.drop_duplicates(columns))
    if len(ledger) > kept_from_before and kept_from_before:
        log.info(
            "privacy requests of %s: %d held, %d added to the ledger",
            ingest_date,
            kept_from_before,
            len(ledger) - kept_from_before,
        )
    return write_partition(lake, "privacy_requests", ingest_date, ledger)


def partitions(lake: Path, table: str, as_of: str | None = None) -> list[Path]:
    """A table's partition files, oldest first; with `as_of`, only those of that date and earlier."""
    parts = sorted((lake / table).glob("ingest_date=*/part.parquet"))
    if as_of is None:
        return parts
    as_of = check_date(as_of)
    return [p for p in parts if partition_date(p) <= as_of]


def read_table(lake: Path, table: str, as_of: str | None = None) -> pd.DataFrame:
    """Union of the partitions (up to `as_of` when given); for keyed tables the newest partition's row wins."""
    parts = partitions(lake, table, as_of)
    if not parts:
        return empty(table) if table in TABLES else pd.DataFrame()
    frames = []
    for p in parts:
        frame = pq.read_table(p).to_pandas()
        frame["_ingest_date"] = partition_date(p)
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    key = KEYS.get(table)
    if key:
        df = df.sort_values("_ingest_date", kind="mergesort").drop_duplicates(key, keep="last")
    elif table == "privacy_requests":
        df = df.drop_duplicates(["user_id", "request", "ts"], keep="last")
    return df.drop(columns="_ingest_date").reset_index(drop=True)


def purge_users(lake: Path, user_ids: Collection[str]) -> int:
    """Rewrite every partition that holds rows of these (pseudonymized) shoppers; return rows removed."""
    if not user_ids:
        return 0
    removed = 0
    wanted = set(user_ids)
    for table in ("users", "events", "privacy_requests", QUARANTINE):
        for path in partitions(lake, table):
            df = pq.read_table(path).to_pandas()
            if "user_id" not in df.columns:
                continue
            hit = df["user_id"].isin(wanted)
            # a deletion request itself is kept: it is how later ingestions know to delete again
            if table == "privacy_requests":
                hit &= df["request"] != "delete"
            if hit.any():
                removed += int(hit.sum())
                write_partition(lake, table, partition_date(path), df[~hit])
    if removed:
        log.info("purged %d lake rows of %d deleted shopper(s)", removed, len(wanted))
    return removed
