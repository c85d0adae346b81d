"""Source adapters' common shape: `RawTables`, and `read_source` that picks an adapter by name.

Every adapter returns the four tables of the data contract (`ml.data.schema`) as read: raw, not yet
validated (a source may hold rows that break the contract; ingestion quarantines them), user ids not yet
pseudonymized. `split_time` is where the temporal hold-out begins: the chain trains on events with
`ts < split_time` and evaluates each interaction event (`schema.INTERACTION_TYPES`) at or after it as one
case: the shopper's earlier item events (newest last, at most 10) -> that event's item.
Timestamps may arrive as text (the synthetic log writes ISO-8601 strings, one bad row is not a date);
`schema.validate` parses them, so read `ts` only from validated tables.

Sources:
- `synthetic`: the demo default, generated (`ml.data.synthetic`); no path.
- `amazon2018`: a folder in the format of `amazon2018-industrial` (`ml.data.amazon2018`).
- `coat`: the Coat shopping data folder (`ml.data.coat`).
- `recbole`: a folder of RecBole atomic files, `*.item` and `*.inter` (`ml.data.recbole`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ml.config import SOURCES

log = logging.getLogger(__name__)

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


def read_source(
    name: str,
    path: str | Path | None,
    *,
    n_users: int = 2000,
    n_items: int = 1200,
    seed: int = 7,
) -> RawTables:
    """Read one source by name. `path` is the source's folder (unused by `synthetic`);
    `n_users`, `n_items` and `seed` size the synthetic set (the file sources ignore them)."""
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; choose one of {list(SOURCES)}")
    if name == "synthetic":
        from ml.data import synthetic

        if path:
            log.info("source 'synthetic' is generated; ignoring path %s", path)
        return synthetic.generate(n_users=n_users, n_items=n_items, seed=seed)
    if not path:
        raise SourceError(
            f"source {name!r} needs a path: the folder holding {_EXPECTED[name]} (e.g. --path DIR)"
        )
    if name == "amazon2018":
        from ml.data import amazon2018

        return amazon2018.load(path)
    if name == "recbole":
        from ml.data import recbole

        return recbole.load(path)
    from ml.data import coat

    return coat.load(path)


_EXPECTED = {
    "amazon2018": "one each of *.item.json, *.valid.csv and *.test.csv",
    "recbole": "one *.item and either *.valid.inter + *.test.inter (optionally *.train.inter) or one *.inter",
    "coat": "train.ascii, test.ascii and user_item_features/ (item and user features with their *_map.txt)",
}


def require_folder(path: str | Path, source: str) -> Path:
    """`path` as a Path if it is a folder, else a clear error naming it and what the source expects."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SourceNotFoundError(
            f"source {source!r}: folder {folder} does not exist or is not a folder; "
            f"expected a folder holding {_EXPECTED[source]}"
        )
    return folder


def find_one(folder: Path, suffix: str, source: str) -> Path:
    """The single file in `folder` whose name ends with `suffix`; a clear error if none or several."""
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
    if not matches:
        raise SourceNotFoundError(
            f"source {source!r}: no file ending in {suffix!r} in {folder}; expected {_EXPECTED[source]}"
        )
    if len(matches) > 1:
        raise SourceError(
            f"source {source!r}: several files end in {suffix!r} in {folder}: "
            f"{[p.name for p in matches]}; keep exactly one"
        )
    return matches[0]


def require_file(path: Path, source: str) -> Path:
    """`path` itself, or a clear error naming it and what the source expects."""
    if not path.is_file():
        raise SourceNotFoundError(f"source {source!r}: missing file {path}; expected {_EXPECTED[source]}")
    return path
