"""A shop's own tables, as the `files` and `sql` sources read them: the options file, the column map, the
default split time, and the chunk-by-chunk assembly of the contract's tables.

Options (`vetted-source.yaml` in a `files` folder, or the file `--path` names for `sql`; every key optional):

    columns:                 # per contract table: the shop's column -> the contract's column
      items: {sku: item_id, name: title, maker: brand}
      events: {id: event_id, customer: user_id, sku: item_id, kind: event_type, at: ts}
    split_time: 2026-03-01T00:00:00Z   # where the hold-out begins; default: the last 10% of the event time range
    chunk_rows: 50000        # rows read at a time
    tables: {items: catalogue.parquet}   # files: a file or folder per table; sql: a table name per table
    queries: {events: "SELECT ..."}      # sql only: a query instead of a table
    schema: shop             # sql only: the tables' schema
    events_until: true       # sql only: read no event after the run's ingest date (see ml.data.sql)

Tables: `items` and `events` are required; `users` absent means the shoppers the events name; `privacy_requests`
absent means none. A contract column the shop's table lacks (after the map) is an error when the contract
requires a value (an id, a title, a type, a time) and is left empty when it may be empty (description, brand,
category, price, query); the log names each. Columns the contract does not name are not read at all (users keep
every column: each is an optional attribute for the fairness audit), so a shop's wide table costs only the
contract's columns in memory.

Reading in chunks: each table is read `chunk_rows` rows at a time (pyarrow dataset batches for files, a
server-side cursor for SQL), each chunk renamed and cut to the contract's columns, and the chunks concatenated.
Rows are not validated chunk by chunk: ingestion validates the concatenated table once, exactly as for every
other source, because two of its rules (a duplicate key, an event naming an item absent from the catalogue) are
about the whole table, and one path for every source keeps the quarantine's reasons the same. So memory holds
the contract's columns of every row, never the shop's whole rows; nothing is written through to disk first
(measured beside whole-table loads: benchmarks/results/source-chunks.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.data import schema
from ml.data.raw import RawTables, SourceError

log = logging.getLogger(__name__)

OPTIONS_FILE = "vetted-source.yaml"
TABLES = ("items", "users", "events", "privacy_requests")
REQUIRED_TABLES = ("items", "events")
OPTION_KEYS = ("columns", "split_time", "chunk_rows", "tables", "queries", "schema", "events_until")
SQL_ONLY = ("queries", "schema", "events_until")
CHUNK_ROWS = 50_000  # rows per chunk: a few MB of contract columns, few enough round trips to a database
HOLDOUT_SHARE = 0.1  # the default split time leaves this share of the event time range for the hold-out


@dataclass(frozen=True)
class Options:
    """The options file's settings, checked (see the module docstring)."""

    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    split_time: pd.Timestamp | None = None
    chunk_rows: int = CHUNK_ROWS
    tables: dict[str, str] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    schema: str | None = None
    events_until: bool = True

    def source_columns(self, table: str) -> dict[str, str]:
        """contract column -> the shop's column for `table` (the contract's own name where the map has none)."""
        renamed = {contract: shop for shop, contract in self.columns.get(table, {}).items()}
        return {c.name: renamed.get(c.name, c.name) for c in schema.TABLES[table]}


def parse_options(data: Any, where: str, source: str) -> Options:
    """Options from the parsed YAML `data` (None: all defaults); a clear `SourceError` naming `where` otherwise."""
    if data is None:
        return Options()
    if not isinstance(data, Mapping):
        raise SourceError(f"source {source!r}: {where} must be a mapping of options {list(OPTION_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(OPTION_KEYS))
    if unknown:
        raise SourceError(f"source {source!r}: {where}: unknown option(s) {unknown}; known: {list(OPTION_KEYS)}")
    if source != "sql":
        misplaced = sorted(k for k in SQL_ONLY if k in data)
        if misplaced:
            raise SourceError(f"source {source!r}: {where}: option(s) {misplaced} are for the sql source only")
    columns = _columns(data.get("columns") or {}, where, source)
    tables = _per_table(data.get("tables") or {}, "tables", where, source)
    queries = _per_table(data.get("queries") or {}, "queries", where, source)
    both = sorted(set(tables) & set(queries))
    if both:
        raise SourceError(f"source {source!r}: {where}: table(s) {both} have both a table name and a query; keep one")
    chunk = data.get("chunk_rows", CHUNK_ROWS)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise SourceError(f"source {source!r}: {where}: chunk_rows must be a whole number >= 1, got {chunk!r}")
    db_schema = data.get("schema")
    if db_schema is not None and not (isinstance(db_schema, str) and db_schema.strip()):
        raise SourceError(f"source {source!r}: {where}: schema must be a name, got {db_schema!r}")
    until = data.get("events_until", True)
    if not isinstance(until, bool):
        raise SourceError(f"source {source!r}: {where}: events_until must be true or false, got {until!r}")
    return Options(
        columns=columns,
        split_time=_split_time(data.get("split_time"), where, source),
        chunk_rows=chunk,
        tables=tables,
        queries=queries,
        schema=db_schema,
        events_until=until,
    )


def _per_table(value: Any, key: str, where: str, source: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SourceError(f"source {source!r}: {where}: {key} must map contract tables {list(TABLES)} to text")
    out = {}
    for table, text in value.items():
        if table not in TABLES:
            raise SourceError(
                f"source {source!r}: {where}: {key} names table {table!r}; the contract has {list(TABLES)}"
            )
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"source {source!r}: {where}: {key}.{table} must be non-empty text, got {text!r}")
        out[str(table)] = text.strip()
    return out


def _columns(value: Any, where: str, source: str) -> dict[str, dict[str, str]]:
    """The column map, each table's checked: contract columns only (users: any name is an attribute), each once."""
    if not isinstance(value, Mapping):
        raise SourceError(
            f"source {source!r}: {where}: columns must map each table to {{shop column: contract column}}"
        )
    out: dict[str, dict[str, str]] = {}
    for table, mapping in value.items():
        if table not in TABLES:
            raise SourceError(
                f"source {source!r}: {where}: columns names table {table!r}; the contract has {list(TABLES)}"
            )
        if not isinstance(mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise SourceError(
                f"source {source!r}: {where}: columns.{table} must map shop column names to contract "
                "column names (text to text)"
            )
        named = [c.name for c in schema.TABLES[table]]
        if table != "users":
            wrong = sorted(v for v in mapping.values() if v not in named)
            if wrong:
                raise SourceError(
                    f"source {source!r}: {where}: columns.{table} maps onto {wrong}, which the contract's "
                    f"{table} table does not have; its columns are {named}"
                )
        targets = list(mapping.values())
        twice = sorted({v for v in targets if targets.count(v) > 1})
        if twice:
            raise SourceError(f"source {source!r}: {where}: columns.{table} maps several columns onto {twice}")
        out[str(table)] = dict(mapping)
    return out


def _split_time(value: Any, where: str, source: str) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise SourceError(f"source {source!r}: {where}: split_time {value!r} is not a date-time ({err})") from None
    if ts is pd.NaT:
        raise SourceError(f"source {source!r}: {where}: split_time is empty")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def contract_chunk(table: str, chunk: pd.DataFrame, options: Options) -> pd.DataFrame:
    """One chunk renamed by the column map and cut to the contract's columns (users: every column)."""
    chunk = chunk.rename(columns=options.columns.get(table, {}))
    if table == "users":
        return chunk
    return chunk[[c.name for c in schema.TABLES[table] if c.name in chunk.columns]]


def wanted_columns(table: str, available: Iterable[str], options: Options) -> list[str] | None:
    """The shop's columns to read for `table` (None: all, for users); projection before any row is read."""
    if table == "users":
        return None
    have = set(available)
    return [shop for shop in options.source_columns(table).values() if shop in have]


def check_columns(table: str, available: Iterable[str], where: str, source: str, options: Options) -> None:
    """Before any row is read: every column the contract requires a value in is there (after the map), or an error
    naming `where`, its columns, and the map that would fix it."""
    have = set(map(str, available))
    shop = options.source_columns(table)
    missing = [c.name for c in schema.TABLES[table] if not c.nullable and shop[c.name] not in have]
    if missing:
        raise SourceError(
            f"source {source!r}: {where} lacks column(s) {[shop[m] for m in missing]} for the contract's "
            f"{missing}; it has {sorted(have)}. Rename them in the table or map them in {OPTIONS_FILE} "
            f"(columns: {{{table}: {{your_column: {missing[0]}}}}})"
        )


def finish_table(table: str, chunks: list[pd.DataFrame], where: str, source: str) -> pd.DataFrame:
    """The chunks as one table with every contract column; one the source lacks (an optional one: see
    `check_columns`) is left empty, and the log says so."""
    frame = pd.concat(chunks, ignore_index=True)
    empty = [c.name for c in schema.TABLES[table] if c.nullable and c.name not in frame.columns]
    for name in empty:
        frame[name] = None
    if empty:
        log.info("%s: %s has no column(s) %s; left empty", source, where, empty)
    named = [c.name for c in schema.TABLES[table]]
    return frame[named + [c for c in frame.columns if c not in named]]  # the contract's order; users' attributes after


def default_split_time(events: pd.DataFrame, until: pd.Timestamp | None) -> pd.Timestamp:
    """The start of the last `HOLDOUT_SHARE` of the event time range: over the events whose `ts` parses and,
    with `until`, is before it (the events the run may know), so the hold-out is never empty for lack of time."""
    ts = schema.parse_timestamps(events["ts"]).dropna() if "ts" in events else pd.Series(dtype="datetime64[ns, UTC]")
    if until is not None:
        ts = ts[ts < until]
    if ts.empty:
        raise SourceError(
            "no event has a time before the end of the ingest date: cannot place the hold-out; set "
            f"split_time in {OPTIONS_FILE} or check the events' ts column"
        )
    first, last = ts.min(), ts.max()
    span_ns = (last - first).value
    return first + pd.Timedelta(int(math.floor(span_ns * (1 - HOLDOUT_SHARE))), unit="ns")


def assemble(source: str, tables: dict[str, pd.DataFrame], options: Options, until: pd.Timestamp | None) -> RawTables:
    """RawTables from the read tables (`users` and `privacy_requests` optional), with the split time."""
    events = tables["events"]
    users = tables.get("users")
    if users is None:
        users = pd.DataFrame({"user_id": pd.unique(events["user_id"].dropna())})
        log.info("%s: no users table; the %d shoppers the events name", source, len(users))
    requests = tables.get("privacy_requests")
    if requests is None:
        requests = schema.empty("privacy_requests")
    split = options.split_time or default_split_time(events, until)
    log.info(
        "%s: %d items, %d users, %d events, %d privacy requests; hold-out from %s (%s)",
        source,
        len(tables["items"]),
        len(users),
        len(events),
        len(requests),
        split.isoformat(),
        "the options' split_time"
        if options.split_time is not None
        else f"the last {HOLDOUT_SHARE:.0%} of the event time range",
    )
    return RawTables(
        name=source, items=tables["items"], users=users, events=events, privacy_requests=requests, split_time=split
    )
