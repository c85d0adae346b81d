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

This module reads a folder (`load`, `read` for the source registry `ml.data.sources`, `development_split`) and
maps the catalogue; the file parsing lives in `ml.data.recbole_files`, the sequences, periods and assigned
times in `ml.data.recbole_sequences`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data import schema
from ml.data.raw import RawTables, SourceError, SourceRequest, find_one, require_folder
from ml.data.recbole_files import (
    HISTORY,
    ITEM,
    SOURCE,
    USER,
    find_inter_files,
    read_atomic,
    require_fields,
    shape_of,
)
from ml.data.recbole_sequences import (
    SPLIT_TIME,
    TIMES_NOTE,
    assign_times,
    leave_one_out,
    sequences_from_interactions,
    sequences_from_lists,
)

log = logging.getLogger(__name__)

ITEM_SUFFIX = ".item"
# contract column -> the RecBole field names that fill it, first present wins
ITEM_FIELDS = {
    "title": ("title", "movie_title", "item_name", "name", "product_title"),
    "description": ("description", "desc", "summary", "overview", "plot"),
    "brand": ("brand", "manufacturer", "publisher", "seller", "artist", "author", "studio"),
    "category": ("category", "categories", "genre", "genres", "class", "cate"),
}
EVENT_TYPE = "purchase"  # a RecBole interaction records that the shopper chose the item


def _clean(values: pd.Series) -> pd.Series:
    """Collapse runs of whitespace and trim."""
    return values.astype(str).str.replace(r"\s+", " ", regex=True).str.strip()


def load_items(path: Path) -> pd.DataFrame:
    """The catalogue from `*.item`, its text fields mapped onto the contract's columns by `ITEM_FIELDS`."""
    atomic = read_atomic(path)
    require_fields(atomic, ITEM)
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
