"""The source registry: one table of every source a run can read, and `read_source` that reads one by name.

`REGISTRY` is the only list of sources: the CLI's `--source` choices, `ml.config.SOURCES` (which `RunConfig`
checks), and the training DAG's form (Params `source`, `path`, `url`) all read it. Each row names the adapter
module (whose `read(SourceRequest) -> RawTables` reads it), what the source needs (nothing, a path or a URL),
and what that path or URL must hold, which every "not found" error repeats.

This module imports no adapter and no pandas at import time: adapters are imported by name when a run reads
one (they import `ml.data.raw`, never this module), and `ml.config` imports the table when the DAG is parsed.

Sources:
- `synthetic`: the demo default, generated (`ml.data.synthetic`); no path.
- `amazon2018`: a folder in the format of `amazon2018-industrial` (`ml.data.amazon2018`).
- `coat`: the Coat shopping data folder (`ml.data.coat`).
- `recbole`: a folder of RecBole atomic files, `*.item` and `*.inter` (`ml.data.recbole`).
- `files`: a shop's own four contract tables as parquet or CSV, in a local folder or at an fsspec URL
  (`ml.data.files`).
- `sql`: the same four tables, or four queries, in any database SQLAlchemy reaches (`ml.data.sql`).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.data.raw import HISTORY_LEN, RawTables, SourceError, SourceNotFoundError, SourceRequest

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "HISTORY_LEN",
    "REGISTRY",
    "SOURCE_NAMES",
    "RawTables",
    "SourceError",
    "SourceNotFoundError",
    "SourceRequest",
    "SourceSpec",
    "read_source",
    "spec",
]

log = logging.getLogger(__name__)

NEEDS = ("", "path", "url")  # what a source must be given: nothing, a path (folder), or a database URL


@dataclass(frozen=True)
class SourceSpec:
    """One row of the registry."""

    name: str
    adapter: str  # the module whose `read(request)` reads the source
    needs: str  # one of NEEDS
    expects: str  # what the path or URL must hold, for help texts and errors
    summary: str  # one line for the CLI's help and the DAG's form
    path_note: str = ""  # what an optional path means to a source that needs a URL

    def __post_init__(self) -> None:
        if self.needs not in NEEDS:
            raise ValueError(f"source {self.name!r}: needs={self.needs!r} is not one of {NEEDS}")


REGISTRY: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec(
            "synthetic",
            "ml.data.synthetic",
            "",
            "nothing: the set is generated (--n-users, --n-items, --seed)",
            "generated demo shop",
        ),
        SourceSpec(
            "amazon2018",
            "ml.data.amazon2018",
            "path",
            "one each of *.item.json, *.valid.csv and *.test.csv",
            "a folder in the format of amazon2018-industrial",
        ),
        SourceSpec(
            "coat",
            "ml.data.coat",
            "path",
            "train.ascii, test.ascii and user_item_features/ (item and user features with their *_map.txt)",
            "the Coat shopping data folder",
        ),
        SourceSpec(
            "recbole",
            "ml.data.recbole",
            "path",
            "one *.item and either *.valid.inter + *.test.inter (optionally *.train.inter) or one *.inter",
            "a folder of RecBole atomic files",
        ),
        SourceSpec(
            "files",
            "ml.data.files",
            "path",
            "the contract tables items, events (required), users, privacy_requests (optional), each as NAME.parquet, "
            "NAME.csv or a folder NAME/ of such parts, and optionally vetted-source.yaml (column map, split time)",
            "your own tables as parquet or CSV, in a folder or at an fsspec URL (s3://, gs://, ...)",
        ),
        SourceSpec(
            "sql",
            "ml.data.sql",
            "url",
            "a SQLAlchemy database URL (postgresql://user@host/db, sqlite:///file.db, ...) whose tables items, "
            "events (required), users, privacy_requests (optional) hold the contract's columns",
            "your own tables, or queries, in a database SQLAlchemy reaches",
            path_note="an optional YAML file of options: table names or queries, column map, split time",
        ),
    )
}
SOURCE_NAMES: tuple[str, ...] = tuple(REGISTRY)


def spec(name: str) -> SourceSpec:
    """The registry's row for `name`, or a `SourceError` listing the sources."""
    if name not in REGISTRY:
        raise SourceError(f"unknown source {name!r}; choose one of {list(REGISTRY)}")
    return REGISTRY[name]


def read_source(
    name: str,
    path: str | Path | None,
    *,
    url: str = "",
    n_users: int = 2000,
    n_items: int = 1200,
    seed: int = 7,
    ingest_date: str | None = None,
) -> RawTables:
    """Read one source by name. `path` is the source's folder (or, for `sql`, its optional options file); `url`
    the database of `sql`; `n_users`, `n_items` and `seed` size the synthetic set; `ingest_date` (YYYY-MM-DD,
    default today) bounds the events `sql` reads and the default split time of `files`. A source given what it
    does not use says so in the log; one missing what it needs is a `SourceError` saying what to give."""
    row = spec(name)
    path = str(path) if path else ""
    if row.needs == "path" and not path:
        raise SourceError(f"source {name!r} needs a path: the folder holding {row.expects} (e.g. --path DIR)")
    if row.needs == "url" and not url:
        raise SourceError(f"source {name!r} needs a url: {row.expects} (e.g. --url URL)")
    if path and row.needs == "":
        log.info("source %r is generated; ignoring path %s", name, path)
    if url and row.needs != "url":
        log.info("source %r reads no database; ignoring the url", name)
    request = SourceRequest(
        path=path,
        url=url if row.needs == "url" else "",
        n_users=n_users,
        n_items=n_items,
        seed=seed,
        until=_until(ingest_date) if row.needs else None,
    )
    adapter = importlib.import_module(row.adapter)
    try:
        raw: RawTables = adapter.read(request)
    except SourceNotFoundError as err:  # the adapter names what is missing; the registry says what belongs there
        raise SourceNotFoundError(f"{err}; expected {row.expects}") from err
    return raw


def _until(ingest_date: str | None) -> Any:
    """The end of the ingest date (UTC), today's when none: the events a run for that date may know."""
    from datetime import UTC, datetime

    from ml.data.ingest import cutoff

    return cutoff(ingest_date or datetime.now(UTC).strftime("%Y-%m-%d"))
