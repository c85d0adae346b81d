"""What every source adapter returns and raises: `RawTables`, `SourceError`, and the folder helpers.

The bottom of the data layer: adapters (`ml.data.amazon2018`, `coat`, `recbole`, `files`, `sql`, `synthetic`)
import from here, and the registry (`ml.data.sources`) imports the adapters by name when a run reads one, so
no adapter imports the registry and no import runs in a circle. pandas is imported only for type checking:
the registry, and `ml.config` through it, stay cheap to import (the DAG file is parsed every few seconds).

Each adapter returns the four tables of the data contract (`ml.data.schema`) as read: raw, not yet
validated (a source may hold rows that break the contract; ingestion quarantines them), user ids not yet
pseudonymized. `split_time` is where the temporal hold-out begins: the chain trains on events with
`ts < split_time` and evaluates each interaction event (`schema.INTERACTION_TYPES`) at or after it as one
case: the shopper's earlier item events (newest last, at most `HISTORY_LEN`) -> that event's item.
Timestamps may arrive as text (the synthetic log writes ISO-8601 strings, one bad row is not a date);
`schema.validate` parses them, so read `ts` only from validated tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# how many of a shopper's latest item events form the history of one evaluation case
HISTORY_LEN = 10


class SourceError(ValueError):
    """A source cannot be read as asked: an unknown name, a missing path, or files that do not parse."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """The source's folder or one of its expected files is missing."""


@dataclass
class RawTables:
    """The four contract tables of one source, as read (see the module docstring)."""

    name: str
    items: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame
    privacy_requests: pd.DataFrame
    split_time: pd.Timestamp

    def counts(self) -> dict[str, int]:
        """Rows per table, for logs and run summaries."""
        return {
            "items": len(self.items),
            "users": len(self.users),
            "events": len(self.events),
            "privacy_requests": len(self.privacy_requests),
        }


# The helpers below name the source and the path in their errors; `ml.data.sources.read_source` adds what the
# source expects (the registry's `expects`), so that text lives in one place.


def require_folder(path: str | Path, source: str) -> Path:
    """`path` as a Path if it is a folder, else a clear error naming it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SourceNotFoundError(f"source {source!r}: folder {folder} does not exist or is not a folder")
    return folder


def find_one(folder: Path, suffix: str, source: str) -> Path:
    """The single file in `folder` whose name ends with `suffix`; a clear error if none or several."""
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
    if not matches:
        raise SourceNotFoundError(f"source {source!r}: no file ending in {suffix!r} in {folder}")
    if len(matches) > 1:
        raise SourceError(
            f"source {source!r}: several files end in {suffix!r} in {folder}: "
            f"{[p.name for p in matches]}; keep exactly one"
        )
    return matches[0]


def require_file(path: Path, source: str) -> Path:
    """`path` itself, or a clear error naming it."""
    if not path.is_file():
        raise SourceNotFoundError(f"source {source!r}: missing file {path}")
    return path


@dataclass(frozen=True)
class SourceRequest:
    """What a run asks of its source; each adapter's `read(request)` takes the fields it uses.

    `path`: the folder (file sources) or the optional options file (`sql`); `url`: the database (`sql`);
    `n_users`, `n_items`, `seed`: the synthetic set's size and seed; `until`: the end of the run's ingest date,
    the events a run may know (`sql` reads no later event, `files` sets its default split time from those before
    it; ingestion defers later ones either way)."""

    path: str = ""
    url: str = ""
    n_users: int = 2000
    n_items: int = 1200
    seed: int = 7
    until: pd.Timestamp | None = None
