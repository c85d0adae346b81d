"""Adapter for RecBole's atomic files: `*.item` (the catalogue) and `*.inter` (what shoppers chose).

RecBole, and many published recommenders built on it, keep a data set as tab-separated text whose header types
every field, `name:type` with type one of `token` (one id), `token_seq` (space-separated tokens), `float` or
`float_seq`. Values are not quoted: a tab separates fields, a newline ends a row.

- `*.item`: `item_id:token` plus text fields, mapped onto the contract by name (`ITEM_FIELDS`: `title` or
  `movie_title` -> title, `brand` or `publisher` -> brand, `categories` or `genre` -> category, ...); a
  contract column no field fills is an empty string, and the log names it; a `price:float` field is the price.
- `*.inter`, in either of RecBole's shapes, told apart by the header:
  - `sequences`: `user_id:token`, `item_id_list:token_seq` (the shopper's history, oldest first) and
    `item_id:token` (the next item), as RecBole's sequential benchmark files and `amazon2018-games` hold them;
  - `interactions`: `user_id:token`, `item_id:token`, optionally `timestamp:float`: one choice per row.
  Either as one `X.inter`, or as RecBole's benchmark files `X.valid.inter` + `X.test.inter` (and optionally
  `X.train.inter`).

Each shopper's sequence: in the `sequences` shape, the shopper's first row's history followed by the target of
each of their rows (files in the order train, valid, test; lines in file order), and every row's history must
be the items just before its target (a history cut to a length cap is fine); in the `interactions` shape, the
shopper's rows in file order (train, valid, test), within a file by `timestamp` when there is one, then by line.

Which item is held out: with benchmark files, each row's target belongs to its file's period (`train`, `valid`,
`test`) and the items before a shopper's first target to `train`; with one file, the leave-one-out protocol
labels each shopper's last item `test`, the one before it `valid` and the rest `train` (a shopper with one
item has no case). For the usual valid/test pair the two agree: the last item is held out for test, the
second-to-last is the development case.

The files carry no usable event times (none at all, or a `timestamp` used only to order a shopper's rows), so
`load` assigns them (`TIMES_NOTE`, which the model card repeats): a shopper's items keep their order, and each
period's items fall in that period's window (`WINDOWS`), the test window beginning at `SPLIT_TIME`. So the
contract's temporal split holds out exactly the `test` items, each a case whose history is everything before
it, and trains on the rest. The contract has no place for an item that is history but not training data, so
the chain also trains on the `valid` item; `development_split` writes the folder whose held-out item is the
second-to-last and whose training data is each sequence less its last two items, the leave-one-out protocol's
development run.

Errors in the files' structure (a missing file, a header field without a type, a row with the wrong number of
fields, a history that does not continue its shopper's sequence) raise `SourceError` naming the file and the
line. An interaction naming an item absent from `*.item` breaks the contract, not the file: it is passed on
and ingestion quarantines it ("item_id not in catalog"), as for every source; the log names where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data import schema
from ml.data.raw import RawTables, SourceError, SourceNotFoundError, SourceRequest, find_one, require_folder

log = logging.getLogger(__name__)

SOURCE = "recbole"
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
ITEM_SUFFIX = ".item"
PERIODS = ("train", "valid", "test")  # benchmark files, in time order: X.train.inter, X.valid.inter, X.test.inter
USER, ITEM, HISTORY, TIME = "user_id", "item_id", "item_id_list", "timestamp"
# contract column -> the RecBole field names that fill it, first present wins
ITEM_FIELDS = {
    "title": ("title", "movie_title", "item_name", "name", "product_title"),
    "description": ("description", "desc", "summary", "overview", "plot"),
    "brand": ("brand", "manufacturer", "publisher", "seller", "artist", "author", "studio"),
    "category": ("category", "categories", "genre", "genres", "class", "cate"),
}
EVENT_TYPE = "purchase"  # a RecBole interaction records that the shopper chose the item
# synthetic period windows (the files carry no times); a sequence of up to tens of thousands of items keeps
# distinct seconds in each
TRAIN_START = pd.Timestamp("2017-01-01", tz="UTC")
VALID_START = pd.Timestamp("2018-06-01", tz="UTC")
SPLIT_TIME = pd.Timestamp("2018-08-01", tz="UTC")
END = pd.Timestamp("2018-10-01", tz="UTC")
WINDOWS = {"train": (TRAIN_START, VALID_START), "valid": (VALID_START, SPLIT_TIME), "test": (SPLIT_TIME, END)}
TIMESTAMP_SEED = 2018  # jitter of the assigned times; fixed so a folder always loads the same
TIMES_NOTE = (
    f"Event times assigned by the recbole adapter (its files carry none, or a timestamp used only for order): "
    f"each shopper's items keep their order; the items before the last two fall in [{TRAIN_START:%Y-%m-%d}, "
    f"{VALID_START:%Y-%m-%d}), the second-to-last (the development case) in [{VALID_START:%Y-%m-%d}, "
    f"{SPLIT_TIME:%Y-%m-%d}), the last (the held-out item) in [{SPLIT_TIME:%Y-%m-%d}, {END:%Y-%m-%d}), "
    f"spread evenly with seeded jitter (leave-one-out; benchmark files' own train/valid/test periods when given)."
)


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


def _where(path: Path, line: int) -> str:
    return f"source {SOURCE!r}: {path} line {line}"


def parse_header(path: Path, header: str) -> tuple[Field, ...]:
    """The typed fields of a header line; RecBole needs every field's type, so an untyped one is an error."""
    fields = []
    for raw in header.split("\t"):
        name, sep, kind = raw.strip().rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise SourceError(
                f"{_where(path, 1)}: header field {raw!r} is not name:type with type one of {FIELD_TYPES}; "
                "atomic files type every field, e.g. 'item_id:token\\ttitle:token_seq'"
            )
        fields.append(Field(name, kind))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise SourceError(f"{_where(path, 1)}: header names a field twice: {names}")
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
        raise SourceError(f"{_where(path, 1)}: no header; expected typed fields such as 'item_id:token'")
    fields = parse_header(path, lines.iloc[0])
    names = [f.name for f in fields]
    body = lines.iloc[1:]
    body = body[body != ""]
    counts = body.str.count("\t") + 1
    wrong = counts != len(fields)
    if wrong.any():
        at = wrong.idxmax()
        raise SourceError(
            f"{_where(path, int(at) + 1)}: {counts[at]} tab-separated field(s), the header names {len(fields)} "
            f"({names}); a tab inside a value breaks the row: remove it"
        )
    if body.empty:
        rows = pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    else:
        rows = body.str.split("\t", expand=True)
        rows.columns = names
    rows["line"] = (body.index + 1).astype("int64")
    return AtomicFile(path, fields, rows.reset_index(drop=True))


def _require(atomic: AtomicFile, *names: str) -> None:
    missing = [n for n in names if n not in atomic.names]
    if missing:
        raise SourceError(
            f"{_where(atomic.path, 1)}: the header lacks field(s) {missing}; it has {atomic.names}"
        )


def _clean(values: pd.Series) -> pd.Series:
    """Collapse runs of whitespace and trim."""
    return values.astype(str).str.replace(r"\s+", " ", regex=True).str.strip()


def load_items(path: Path) -> pd.DataFrame:
    """The catalogue from `*.item`, its text fields mapped onto the contract's columns by `ITEM_FIELDS`."""
    atomic = read_atomic(path)
    _require(atomic, ITEM)
    rows = atomic.rows
    out = pd.DataFrame({"item_id": rows[ITEM].str.strip()})
    used, missing = [ITEM], []
    for column, candidates in ITEM_FIELDS.items():
        name = next((n for n in candidates if n in atomic.names), None)
        if name is None:
            out[column] = ""
            missing.append(column)
        else:
            out[column] = _clean(rows[name])
            used.append(name)
    kinds = {f.name: f.kind for f in atomic.fields}
    if kinds.get("price") == "float":
        out["price"] = pd.to_numeric(rows["price"].str.strip(), errors="coerce")
        used.append("price")
    else:
        out["price"] = np.nan
    ignored = [n for n in atomic.names if n not in used]
    log.info(
        "recbole: %d items from %s; fields used %s%s%s",
        len(out),
        path.name,
        used,
        f"; contract columns with no field, left empty: {missing}" if missing else "",
        f"; fields ignored: {ignored}" if ignored else "",
    )
    return out[[c.name for c in schema.TABLES["items"]]]


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
    _require(atomic, USER, ITEM)
    return "sequences" if HISTORY in atomic.names else "interactions"


def _rows(atomic: AtomicFile, period: str, rank: int) -> pd.DataFrame:
    rows = atomic.rows
    return pd.DataFrame(
        {
            "user_id": rows[USER].str.strip(),
            "target": rows[ITEM].str.strip(),
            "period": period,
            "rank": rank,
            "file": str(atomic.path),
            "line": rows["line"],
        }
    )


def sequences_from_lists(files: list[tuple[AtomicFile, str]]) -> pd.DataFrame:
    """Each shopper's sequence from `sequences`-shaped files (see the module docstring).

    Returns one row per position: user_id, position, item_id, period, file, line (where it was read)."""
    frames = []
    for rank, (atomic, period) in enumerate(files):
        frame = _rows(atomic, period, rank)
        frame["history"] = atomic.rows[HISTORY].str.split()
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True).sort_values(["user_id", "rank", "line"], kind="stable")
    rows = rows.reset_index(drop=True)
    rows["j"] = rows.groupby("user_id").cumcount()  # the row's place among its shopper's rows
    first = rows[rows["j"] == 0]
    base = first[["user_id", "history", "file", "line"]].explode("history").dropna(subset=["history"])
    base = base.rename(columns={"history": "item_id"})
    base["position"] = base.groupby("user_id").cumcount()
    base["period"] = "train"
    opening = first.set_index("user_id")["history"].str.len()
    rows["position"] = rows["user_id"].map(opening).to_numpy() + rows["j"].to_numpy()
    targets = rows[["user_id", "position", "target", "period", "file", "line"]].rename(columns={"target": "item_id"})
    seq = pd.concat([base, targets], ignore_index=True).sort_values(["user_id", "position"], kind="stable")
    seq = seq.reset_index(drop=True)
    _check_histories(rows, seq)
    return seq[["user_id", "position", "item_id", "period", "file", "line"]]


def _check_histories(rows: pd.DataFrame, seq: pd.DataFrame) -> None:
    """Every row's history must be the items just before its target in the shopper's sequence."""
    hist = rows[["user_id", "history", "position", "file", "line"]].rename(columns={"position": "target_at"})
    hist = hist.assign(length=hist["history"].str.len()).explode("history").dropna(subset=["history"])
    hist["position"] = hist["target_at"] - hist["length"] + hist.groupby(level=0).cumcount()
    merged = hist.merge(seq[["user_id", "position", "item_id"]], on=["user_id", "position"], how="left")
    bad = merged["item_id"].ne(merged["history"])
    if bad.any():
        row = merged[bad].sort_values(["file", "line"]).iloc[0]
        raise SourceError(
            f"{_where(Path(row['file']), int(row['line']))}: shopper {row['user_id']!r}'s history does not "
            "continue their earlier rows (each row's item_id_list must be the items just before its item_id, "
            "the shopper's rows ordered train, valid, test file and then by line); fix or drop the row"
        )


def sequences_from_interactions(files: list[tuple[AtomicFile, str]]) -> pd.DataFrame:
    """Each shopper's sequence from `interactions`-shaped files: file order, then `timestamp`, then line."""
    frames = []
    for rank, (atomic, period) in enumerate(files):
        frame = _rows(atomic, period, rank).rename(columns={"target": "item_id"})
        frame["time"] = _times(atomic)
        frames.append(frame)
    seq = pd.concat(frames, ignore_index=True).sort_values(
        ["user_id", "rank", "time", "line"], kind="stable", na_position="last"
    )
    seq = seq.reset_index(drop=True)
    seq["position"] = seq.groupby("user_id").cumcount()
    return seq[["user_id", "position", "item_id", "period", "file", "line"]]


def _times(atomic: AtomicFile) -> pd.Series:
    """The `timestamp` field as numbers (NaN when absent or empty); a value that is not a number is an error."""
    if TIME not in atomic.names:
        return pd.Series(np.nan, index=atomic.rows.index)
    raw = atomic.rows[TIME].str.strip()
    times = pd.to_numeric(raw, errors="coerce")
    bad = times.isna() & (raw != "")
    if bad.any():
        at = bad.idxmax()
        raise SourceError(
            f"{_where(atomic.path, int(atomic.rows['line'][at]))}: timestamp {raw[at]!r} is not a number"
        )
    return times


def leave_one_out(seq: pd.DataFrame) -> pd.DataFrame:
    """Label each shopper's last item `test`, the one before `valid`, the rest `train`; one item: `train`."""
    from_end = seq.groupby("user_id").cumcount(ascending=False)
    size = seq.groupby("user_id")["item_id"].transform("size")
    period = np.where(from_end == 0, "test", np.where(from_end == 1, "valid", "train"))
    return seq.assign(period=np.where(size == 1, "train", period))


def assign_times(seq: pd.DataFrame, seed: int = TIMESTAMP_SEED) -> pd.Series:
    """Times that keep each shopper's order: the k-th of a shopper's n items of a period falls in the k-th of n
    equal slices of that period's window (`WINDOWS`), at a seeded random point inside the slice.

    `seq` must be sorted by user and position, its periods in time order along each sequence."""
    rng = np.random.default_rng(seed)
    group = seq.groupby(["user_id", "period"], sort=False)
    k = group.cumcount().to_numpy()
    n = group["item_id"].transform("size").to_numpy()
    lo = seq["period"].map({p: w[0].value // 10**9 for p, w in WINDOWS.items()}).to_numpy("int64")
    span = seq["period"].map({p: (w[1] - w[0]).total_seconds() for p, w in WINDOWS.items()}).to_numpy()
    frac = (k + rng.uniform(0.05, 0.95, len(seq))) / n
    return pd.Series(pd.to_datetime(lo + np.floor(frac * span).astype("int64"), unit="s", utc=True), index=seq.index)


def read_sequences(folder: Path) -> pd.DataFrame:
    """Every shopper's ordered, period-labelled sequence from the folder's `.inter` files."""
    paths = find_inter_files(folder)
    files = [(read_atomic(path), period) for period, path in paths.items()]
    shapes = {atomic.path.name: shape_of(atomic) for atomic, _ in files}
    if len(set(shapes.values())) > 1:
        raise SourceError(f"source {SOURCE!r}: the .inter files mix shapes {shapes}; give them all one shape")
    shape = next(iter(shapes.values()))
    build = sequences_from_lists if shape == "sequences" else sequences_from_interactions
    seq = build(files)
    if "all" in paths:
        seq = leave_one_out(seq)
    log.info(
        "recbole: %s-shaped %s (%s)",
        shape,
        sorted(p.name for p in paths.values()),
        "leave-one-out" if "all" in paths else "periods from the benchmark files",
    )
    return seq


def _report_unknown(seq: pd.DataFrame, items: pd.DataFrame) -> None:
    """Log interactions naming items absent from the catalogue (ingestion quarantines them)."""
    unknown = seq[~seq["item_id"].isin(set(items["item_id"]))]
    if len(unknown):
        first = unknown.sort_values(["file", "line"]).iloc[0]
        log.warning(
            "recbole: %d interaction(s) name %d item(s) absent from the .item file, first %r at %s line %d; "
            "ingestion quarantines them (item_id not in catalog)",
            len(unknown),
            unknown["item_id"].nunique(),
            first["item_id"],
            first["file"],
            first["line"],
        )


def load(path: str | Path) -> RawTables:
    """Read a folder of RecBole atomic files into the contract's tables (see the module docstring)."""
    folder = require_folder(path, SOURCE)
    items = load_items(find_one(folder, ITEM_SUFFIX, SOURCE))
    seq = read_sequences(folder)
    _report_unknown(seq, items)
    ts = assign_times(seq)
    events = pd.DataFrame(
        {
            "event_id": seq["user_id"] + "-" + seq["position"].astype(str),
            "user_id": seq["user_id"],
            "item_id": seq["item_id"],
            "event_type": EVENT_TYPE,
            "query": None,
            "ts": ts,
        }
    ).sort_values(["ts", "event_id"], kind="stable")
    users = pd.DataFrame({"user_id": sorted(seq["user_id"].unique())})
    periods = seq["period"].value_counts()
    log.info(
        "recbole: %d items, %d users, %d events (%d train, %d valid, %d held out for test); %s",
        len(items),
        len(users),
        len(events),
        periods.get("train", 0),
        periods.get("valid", 0),
        periods.get("test", 0),
        TIMES_NOTE,
    )
    return RawTables(
        name=SOURCE,
        items=items,
        users=users,
        events=events.reset_index(drop=True),
        privacy_requests=schema.empty("privacy_requests"),
        split_time=SPLIT_TIME,
    )


def development_split(path: str | Path, out: Path) -> Path:
    """The leave-one-out protocol's development run of a RecBole folder, written as a valid/test pair.

    Each shopper's sequence less its held-out (`test`) items becomes the new sequence, so `load` of the result
    holds out the second-to-last item (the development case) and trains on each sequence less its last two
    items; no test item is read. A shopper left with one item has no case. Written to `out` in the sequences
    shape; the item file is linked, not copied.
    """
    folder = require_folder(path, SOURCE)
    items = find_one(folder, ITEM_SUFFIX, SOURCE)
    seq = read_sequences(folder)
    kept = seq[seq["period"] != "test"].groupby("user_id", sort=True)["item_id"].agg(list)
    header = "\t".join(f"{f}:{k}" for f, k in ((USER, "token"), (HISTORY, "token_seq"), (ITEM, "token"))) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / items.name).symlink_to(items.resolve())
    stem = items.name[: -len(ITEM_SUFFIX)]
    for period, cut in (("valid", 2), ("test", 1)):
        rows = [f"{user}\t{' '.join(s[:-cut])}\t{s[-cut]}\n" for user, s in kept.items() if len(s) >= cut]
        (out / f"{stem}.{period}.inter").write_text(header + "".join(rows), encoding="utf-8")
    log.info("recbole: development split of %s written to %s (%d shoppers)", folder, out, len(kept))
    return out


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return load(request.path)
