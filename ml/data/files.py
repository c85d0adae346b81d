"""Adapter for a shop's own tables as files: a folder, local or at any fsspec URL the stack reaches (`s3://`,
`gs://`, `memory://` in tests), holding the contract's tables as parquet or CSV.

Each table is `NAME.parquet`, `NAME.csv`, or a folder `NAME/` of parts (all parquet or all CSV, nested folders
such as hive partitions `date=2026-01-05/` included; files whose names begin with `_` or `.` are not parts), for
NAME in items, events (required), users, privacy_requests (optional); `tables:` in the options file names another
file or folder for a table. The options file `vetted-source.yaml` beside them renames columns and sets the split
time (`ml.data.shop` describes both, the defaults, and why tables are read in chunks).

Parquet keeps its types. CSV has none, so every CSV cell is read as text (a column's type guessed from the first
rows would fail on a later chunk), an empty cell is a missing value, and a `ts` cell that is a number is seconds
since the Unix epoch (the contract's rule for a numeric time, `ml.data.schema`). The values are then judged by
ingestion's validation, as every source's are.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from ml.data import shop
from ml.data.raw import RawTables, SourceError, SourceNotFoundError, SourceRequest

log = logging.getLogger(__name__)

SOURCE = "files"
FORMATS = {".parquet": "parquet", ".csv": "csv"}
NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return load(request.path, until=request.until)


def load(path: str, until: pd.Timestamp | None = None) -> RawTables:
    """Read the folder's tables (see the module docstring). `until`, the end of the run's ingest date, only places
    the default split time (among the events known by then); later events are read and ingestion defers them."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(str(path))
    except (ValueError, ImportError) as err:  # an unknown protocol, or one whose package is not installed
        raise SourceError(f"source {SOURCE!r}: cannot open {path}: {err}") from err
    root = root.rstrip("/") or "/"
    if not fs.isdir(root):
        raise SourceNotFoundError(f"source {SOURCE!r}: folder {path} does not exist or is not a folder")
    options = _options(fs, root)
    tables: dict[str, pd.DataFrame] = {}
    for table in shop.TABLES:
        found = locate(fs, root, table, options)
        if found is None:
            if table in shop.REQUIRED_TABLES:
                raise SourceNotFoundError(
                    f"source {SOURCE!r}: no {table} table in {path} (looked for {table}.parquet, "
                    f"{table}.csv and a folder {table}/)"
                )
            continue
        location, fmt = found
        tables[table] = read_table(fs, location, fmt, table, options)
    return shop.assemble(SOURCE, tables, options, until)


def _options(fs: Any, root: str) -> shop.Options:
    import yaml

    where = f"{root}/{shop.OPTIONS_FILE}"
    if not fs.isfile(where):
        return shop.Options()
    try:
        with fs.open(where, "rb") as f:
            data = yaml.safe_load(f.read().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SourceError(f"source {SOURCE!r}: {where} is not YAML text: {err}") from err
    return shop.parse_options(data, where, SOURCE)


def locate(fs: Any, root: str, table: str, options: shop.Options) -> tuple[str, str] | None:
    """(file or folder, format) of `table`, or None when the folder has none; several candidates is an error."""
    if table in options.tables:
        named = f"{root}/{options.tables[table].strip('/')}"
        if not fs.exists(named):
            raise SourceNotFoundError(
                f"source {SOURCE!r}: {shop.OPTIONS_FILE} names {named} for table {table}; it does not exist"
            )
        candidates = [named]
    else:
        candidates = [c for c in (f"{root}/{table}.parquet", f"{root}/{table}.csv", f"{root}/{table}") if fs.exists(c)]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise SourceError(f"source {SOURCE!r}: table {table} is in several places {candidates}; keep one")
    where = candidates[0]
    if fs.isdir(where):
        return where, _folder_format(fs, where, table)
    fmt = next((f for suffix, f in FORMATS.items() if where.endswith(suffix)), None)
    if fmt is None:
        raise SourceError(f"source {SOURCE!r}: {where} (table {table}) is neither .parquet nor .csv")
    return where, fmt


def _parts(fs: Any, folder: str) -> list[str]:
    """The data files under `folder`, nested folders included; `_SUCCESS`, `.crc` and such are not parts."""
    names = fs.find(folder)
    return sorted(n for n in names if not any(p.startswith(("_", ".")) for p in n[len(folder) :].split("/") if p))


def _folder_format(fs: Any, folder: str, table: str) -> str:
    parts = _parts(fs, folder)
    kinds = {next((f for suffix, f in FORMATS.items() if p.endswith(suffix)), "other") for p in parts}
    if not parts:
        raise SourceError(f"source {SOURCE!r}: folder {folder} (table {table}) holds no .parquet or .csv part")
    if len(kinds) > 1:
        odd = [p for p in parts if not p.endswith(tuple(FORMATS))][:3]
        raise SourceError(
            f"source {SOURCE!r}: folder {folder} (table {table}) mixes kinds of files "
            f"{sorted(kinds)}{f', e.g. {odd}' if odd else ''}; keep all parquet or all CSV"
        )
    return kinds.pop()


def read_table(fs: Any, location: str, fmt: str, table: str, options: shop.Options) -> pd.DataFrame:
    """One table, `options.chunk_rows` rows at a time, each chunk cut to the contract's columns (`ml.data.shop`)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    sources = _parts(fs, location) if fs.isdir(location) else location
    try:
        dataset = ds.dataset(sources, format=fmt, filesystem=fs, partitioning="hive" if fs.isdir(location) else None)
        if fmt == "csv":  # every cell as text: see the module docstring
            text = pa.schema([pa.field(name, pa.string()) for name in dataset.schema.names])
            csv = ds.CsvFileFormat(convert_options=_text_cells(dataset.schema.names))
            dataset = ds.dataset(
                sources, format=csv, filesystem=fs, schema=text, partitioning="hive" if fs.isdir(location) else None
            )
        shop.check_columns(table, dataset.schema.names, location, SOURCE, options)
        columns = shop.wanted_columns(table, dataset.schema.names, options)
        chunks = [
            shop.contract_chunk(table, batch.to_pandas(integer_object_nulls=True), options)
            for batch in dataset.to_batches(columns=columns, batch_size=options.chunk_rows)
        ]
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceError(f"source {SOURCE!r}: cannot read {location} (table {table}) as {fmt}: {err}") from err
    if not chunks:
        chunks = [shop.contract_chunk(table, pd.DataFrame(columns=columns or dataset.schema.names), options)]
    frame = shop.finish_table(table, chunks, location, SOURCE)
    if fmt == "csv" and "ts" in frame.columns:
        numeric = frame["ts"].map(lambda v: isinstance(v, str) and NUMBER.fullmatch(v) is not None).astype(bool)
        frame["ts"] = frame["ts"].astype(object)
        frame.loc[numeric, "ts"] = frame.loc[numeric, "ts"].astype(float)
    log.info("%s: %s: %d rows from %s (%s)", SOURCE, table, len(frame), location, fmt)
    return frame


def _text_cells(names: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=False,
    )
