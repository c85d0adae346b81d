"""RecBole's atomic files as text: the typed header, the rows, and which `.inter` files a folder holds.

A header types every field, `name:type` with type one of `token`, `token_seq`, `float` or `float_seq`; a tab
separates fields and a newline ends a row. A structural error (an untyped header field, a row with the wrong
number of fields, a missing field or file) raises `SourceError` or `SourceNotFoundError` naming the file and
the line. What the rows mean is `ml.data.recbole_sequences`' and `ml.data.recbole`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ml.data.raw import SourceError, SourceNotFoundError, find_one

if TYPE_CHECKING:
    from pathlib import Path

SOURCE = "recbole"
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
PERIODS = ("train", "valid", "test")  # benchmark files, in time order: X.train.inter, X.valid.inter, X.test.inter
USER, ITEM, HISTORY, TIME = "user_id", "item_id", "item_id_list", "timestamp"


@dataclass(frozen=True)
class Field:
    """One typed header field, `name:kind`."""

    name: str
    kind: str


@dataclass(frozen=True)
class AtomicFile:
    """One atomic file: its typed header and its rows as strings, with each row's 1-based line (header = 1)."""

    path: Path
    fields: tuple[Field, ...]
    rows: pd.DataFrame  # one str column per field, plus `line`

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def where(path: Path, line: int) -> str:
    return f"source {SOURCE!r}: {path} line {line}"


def parse_header(path: Path, header: str) -> tuple[Field, ...]:
    """The typed fields of a header line; RecBole needs every field's type, so an untyped one is an error."""
    fields = []
    for raw in header.split("\t"):
        name, sep, kind = raw.strip().rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise SourceError(
                f"{where(path, 1)}: header field {raw!r} is not name:type with type one of {FIELD_TYPES}; "
                "atomic files type every field, e.g. 'item_id:token\\ttitle:token_seq'"
            )
        fields.append(Field(name, kind))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise SourceError(f"{where(path, 1)}: header names a field twice: {names}")
    return tuple(fields)


def read_atomic(path: Path) -> AtomicFile:
    """Read one atomic file; a row whose field count differs from the header's is an error naming its line.

    Empty lines are skipped (a file ends with one). Fields are split on tabs, whole columns at a time."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first field
    except UnicodeDecodeError as err:
        raise SourceError(f"source {SOURCE!r}: {path} is not UTF-8 text ({err})") from err
    lines = pd.Series(text.split("\n"), dtype=object).str.rstrip("\r")
    if lines.empty or not lines.iloc[0].strip():
        raise SourceError(f"{where(path, 1)}: no header; expected typed fields such as 'item_id:token'")
    fields = parse_header(path, lines.iloc[0])
    names = [f.name for f in fields]
    body = lines.iloc[1:]
    body = body[body != ""]
    counts = body.str.count("\t") + 1
    wrong = counts != len(fields)
    if wrong.any():
        at = wrong.idxmax()
        raise SourceError(
            f"{where(path, int(at) + 1)}: {counts[at]} tab-separated field(s), the header names {len(fields)} "
            f"({names}); a tab inside a value breaks the row: remove it"
        )
    if body.empty:
        rows = pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    else:
        rows = body.str.split("\t", expand=True)
        rows.columns = names
    rows["line"] = (body.index + 1).astype("int64")
    return AtomicFile(path, fields, rows.reset_index(drop=True))


def require_fields(atomic: AtomicFile, *names: str) -> None:
    missing = [n for n in names if n not in atomic.names]
    if missing:
        raise SourceError(f"{where(atomic.path, 1)}: the header lacks field(s) {missing}; it has {atomic.names}")


def find_inter_files(folder: Path) -> dict[str, Path]:
    """The `.inter` files by period: RecBole's benchmark files (`test` and `valid` required, `train` optional),
    or a single file under the key "all"."""
    found = {p: find_one(folder, f".{p}.inter", SOURCE) for p in PERIODS if _has(folder, f".{p}.inter")}
    if found:
        missing = [p for p in ("valid", "test") if p not in found]
        if missing:
            raise SourceNotFoundError(
                f"source {SOURCE!r}: {folder} has benchmark file(s) {sorted(v.name for v in found.values())} but "
                f"no *.{missing[0]}.inter; give valid and test files together (train optional), or one *.inter"
            )
        return found
    return {"all": find_one(folder, ".inter", SOURCE)}


def _has(folder: Path, suffix: str) -> bool:
    return any(p.is_file() and p.name.endswith(suffix) for p in folder.iterdir())


def shape_of(atomic: AtomicFile) -> str:
    """`sequences` (history list + next item per row) or `interactions` (one choice per row)."""
    require_fields(atomic, USER, ITEM)
    return "sequences" if HISTORY in atomic.names else "interactions"
