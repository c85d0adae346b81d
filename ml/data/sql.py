"""Adapter for a shop's own tables in a database: any URL SQLAlchemy opens (`postgresql://user@host/db`,
`sqlite:///shop.db`, `mysql+pymysql://...` with its driver installed).

The four contract tables are read from tables named `items`, `events` (required), `users` and
`privacy_requests` (optional), or from the names or queries the options file gives (`--path`, a YAML file;
`ml.data.shop` describes the options, the column map, the default split time and reading in chunks). A table
absent from the database (a required one is an error) is read like an absent file.

Incremental by the run's ingest date: the events query reads no event at or after the end of that date
(`ts < until`; an event without a time is read, for ingestion to quarantine, the bound a parameter of the query, compared in the column's own type: a time type as a
time, a number as seconds since the epoch, text as an ISO-8601 date, which orders as text). So a daily run
reads what it may know, and a backfill of an old date reads that date's past only. `events_until: false` in the
options reads every event instead (for text times that are not ISO-8601; ingestion then defers later events).
A query given in the options is the operator's own SQL, like a DAG file's: it is wrapped as a subquery and
bounded the same way (its `ts` must then be a time type, or set `events_until: false`).

Security: no value a run is given is put into SQL text: table and column names are quoted by SQLAlchemy
(reflected from the database), the date bound is a bound parameter. The URL may hold a password: every message
and log line shows it masked (`user:***@host`), and `RunConfig.to_dict` stores it masked.

Reading: a server-side cursor (`stream_results`) fetches `chunk_rows` rows at a time, each chunk kept as Python
values (an integer id stays an integer even beside a NULL, a NUMERIC price becomes a float) and cut to the
contract's columns; only the contract's columns of a table are selected (users: every column).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from ml.data import shop
from ml.data.raw import RawTables, SourceError, SourceNotFoundError, SourceRequest

log = logging.getLogger(__name__)

SOURCE = "sql"


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return load(request.url, options_path=request.path, until=request.until)


def redact(url: str) -> str:
    """The URL with its password masked, for every message and log line."""
    from ml.store_urls import redact as masked

    return masked(url)


def load(url: str, options_path: str = "", until: pd.Timestamp | None = None) -> RawTables:
    """Read the database's tables (see the module docstring); `until`, the end of the run's ingest date, bounds
    the events read (None: every event)."""
    import sqlalchemy as sa

    options = _options(options_path)
    shown = redact(url)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
        raise SourceError(
            f"source {SOURCE!r}: {shown} is not a database URL SQLAlchemy can open "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from None
    tables: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as conn:
            for table in shop.TABLES:
                frame = read_table(conn, table, options, until if options.events_until else None, shown)
                if frame is not None:
                    tables[table] = frame
    except sa.exc.DBAPIError as err:  # unreachable, refused, a query that fails: the driver's own words
        raise SourceError(
            f"source {SOURCE!r}: {shown}: {type(err.orig).__name__}: {_first_line(err.orig or err)}"
        ) from None
    finally:
        engine.dispose()
    for table in shop.REQUIRED_TABLES:
        if table not in tables:
            name = f"{options.schema}.{table}" if options.schema else table
            raise SourceNotFoundError(
                f"source {SOURCE!r}: {shown} has no table {options.tables.get(table, name)!r} "
                f"for the contract's {table}; name yours in the options (tables: or queries:)"
            )
    return shop.assemble(SOURCE, tables, options, until)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else repr(err)


def _options(path: str) -> shop.Options:
    import yaml

    if not path:
        return shop.Options()
    file = Path(path).expanduser()
    if not file.is_file():
        raise SourceNotFoundError(
            f"source {SOURCE!r}: options file {file} does not exist (--path names the sql "
            "source's optional options file, a YAML file)"
        )
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SourceError(f"source {SOURCE!r}: {file} is not YAML text: {err}") from err
    return shop.parse_options(data, str(file), SOURCE)


def read_table(
    conn: Any, table: str, options: shop.Options, until: pd.Timestamp | None, shown: str
) -> pd.DataFrame | None:
    """One contract table in chunks, or None when the database has no such table."""
    where, stmt = _statement(conn, table, options, until)
    if stmt is None:
        return None
    chunks = []
    result = conn.execution_options(stream_results=True, max_row_buffer=options.chunk_rows).execute(stmt)
    keys = list(result.keys())
    shop.check_columns(table, keys, f"{shown} {where}", SOURCE, options)
    for rows in result.partitions(options.chunk_rows):
        # built as Python objects: pandas' inference would turn integer ids beside a NULL into floats
        chunk = pd.DataFrame([tuple(_plain(v) for v in r) for r in rows], columns=keys, dtype=object)
        chunks.append(shop.contract_chunk(table, chunk, options))
    if not chunks:
        chunks = [shop.contract_chunk(table, pd.DataFrame(columns=keys, dtype=object), options)]
    frame = shop.finish_table(table, chunks, f"{shown} {where}", SOURCE)
    log.info(
        "%s: %s: %d rows from %s %s%s",
        SOURCE,
        table,
        len(frame),
        shown,
        where,
        f" (events before {until.isoformat()})" if table == "events" and until is not None else "",
    )
    return frame


def _plain(value: Any) -> Any:
    """A database value as the contract reads it: a NUMERIC becomes an int when whole (ids), else a float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.is_finite() else float(value)
    return value


def _statement(conn: Any, table: str, options: shop.Options, until: pd.Timestamp | None) -> tuple[str, Any]:
    """(what is read, for messages; the SELECT), or (.., None) when the database has no such table."""
    import sqlalchemy as sa

    ts_column = options.source_columns(table).get("ts", "ts")
    if table in options.queries:
        query: Any = sa.select(sa.literal_column("*")).select_from(
            sa.text(f"({options.queries[table]}) AS vetted_rows")
        )
        if table == "events" and until is not None:
            bound = sa.bindparam("until", until.to_pydatetime(), type_=sa.DateTime(timezone=True))
            query = query.where(sa.or_(sa.column(ts_column) < bound, sa.column(ts_column).is_(None)))
        return f"query for {table}", query
    name = options.tables.get(table, table)
    try:
        reflected = sa.Table(name, sa.MetaData(), schema=options.schema, autoload_with=conn)
    except sa.exc.NoSuchTableError:
        return f"table {name}", None
    columns = shop.wanted_columns(table, reflected.columns.keys(), options)
    # nothing the contract names (or users, whose every column is an attribute): all, so check_columns can say
    query = sa.select(*(reflected.c[c] for c in columns)) if columns else sa.select(reflected)
    if table == "events" and until is not None and ts_column in reflected.c:
        ts = reflected.c[ts_column]
        query = query.where(sa.or_(ts < _bound(ts.type, until), ts.is_(None)))
    return f"table {reflected.fullname}", query


def _bound(column_type: Any, until: pd.Timestamp) -> Any:
    """`until` as a bound parameter in the column's own type (see the module docstring)."""
    import sqlalchemy as sa

    if isinstance(column_type, sa.DateTime | sa.Date):
        moment = until.to_pydatetime()
        if not getattr(column_type, "timezone", False):
            moment = moment.replace(tzinfo=None)  # a column without a zone holds UTC (the contract's rule)
        return sa.bindparam("until", moment, type_=column_type)
    if isinstance(column_type, sa.Integer | sa.Numeric | sa.Float):
        return sa.bindparam("until", until.timestamp(), type_=sa.Float())
    if isinstance(column_type, sa.String):
        # ISO-8601 text orders as text; `until` is a midnight, so its date alone is the bound
        return sa.bindparam("until", until.strftime("%Y-%m-%d"), type_=sa.String())
    return sa.bindparam("until", until.to_pydatetime(), type_=sa.DateTime(timezone=True))
