"""Adapter for the `amazon2018-industrial` format: prepared next-item splits without timestamps.

The folder holds `*.item.json` (item index -> title, description, brand, categories), `*.valid.csv` and
`*.test.csv`. Each csv row is one shopper's history (up to 10 item indices, oldest first) and the next item;
the valid rows come from an earlier period than the test rows, and the rows of one shopper overlap (a later
row's history holds the targets of that shopper's earlier rows).

`load` recovers each shopper's ordered item sequence by chaining the rows (valid rows first, then test rows,
each in file order) and emits one `purchase` event per sequence position, with synthetic but order-preserving
UTC timestamps in three windows:

- train  [TRAIN_START, VALID_START): the history of each shopper's first row (items seen before any target);
- valid  [VALID_START, SPLIT_TIME):  valid rows' targets, and items that reach the sequence between them;
- test   [SPLIT_TIME, END):          test rows' targets, in order.

Everything that precedes the test period (every valid row and each shopper's earliest test row's history)
lies before `split_time`; each test row's target lies after it. Evaluating every interaction event at or after
`split_time` with the shopper's previous <= 10 item events as history reproduces the test file row for row.

A row whose history does not continue its shopper's sequence (never seen in the published files) is repaired:
its history items missing from the sequence are inserted before its target; in the test period they become
`view` events (history, not cases). Counts of chained, repaired and unreproducible rows are in `MergeReport`
and logged.
"""

from __future__ import annotations

import ast
import html
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.data import schema
from ml.data.raw import HISTORY_LEN, RawTables, SourceError, SourceRequest, find_one, require_folder

log = logging.getLogger(__name__)

SOURCE = "amazon2018"
ITEM_SUFFIX = ".item.json"
VALID_SUFFIX = ".valid.csv"
TEST_SUFFIX = ".test.csv"
# synthetic period boundaries (the files carry no timestamps; the data spans about 2016-10 to 2018-11)
TRAIN_START = pd.Timestamp("2016-10-01", tz="UTC")
VALID_START = pd.Timestamp("2018-03-01", tz="UTC")
SPLIT_TIME = pd.Timestamp("2018-07-01", tz="UTC")
END = pd.Timestamp("2018-11-30", tz="UTC")
WINDOWS = {"train": (TRAIN_START, VALID_START), "valid": (VALID_START, SPLIT_TIME), "test": (SPLIT_TIME, END)}
TIMESTAMP_SEED = 2018  # jitter of the synthetic timestamps; fixed so a folder always loads the same


@dataclass(frozen=True)
class Row:
    """One csv row: a shopper's history (oldest first) and the next item."""

    user_id: str
    history: tuple[str, ...]
    target: str
    period: str  # "valid" or "test"
    line: int  # 1-based line in its file (header = line 1), for messages


@dataclass(frozen=True)
class Position:
    """One place in a shopper's recovered sequence."""

    item_id: str
    period: str  # "train", "valid" or "test"
    event_type: str  # "purchase" (a row's target or pre-test history) or "view" (a repaired gap in test)


@dataclass
class MergeReport:
    """How the rows were merged into sequences."""

    users: int = 0
    rows: int = 0
    chained: int = 0  # rows whose history is exactly the sequence's last items
    repaired: int = 0  # rows whose history did not continue the sequence
    gap_items: int = 0  # items inserted by repairs
    unreproducible: int = 0  # test rows whose case history will differ from the file's
    repaired_users: set[str] = field(default_factory=set)


def clean_text(text: str) -> str:
    """Unescape HTML entities, drop tags, collapse whitespace."""
    text = html.unescape(text)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def clean_description(raw: str) -> str:
    """A description stored as a stringified list of paragraphs -> one whitespace-collapsed string."""
    raw = (raw or "").strip()
    if not raw:
        return ""
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError):  # broken quoting inside the list: strip the list syntax by hand
        parsed = re.sub(r"^\[\s*['\"]|['\"]\s*\]$", "", raw)
        parsed = re.split(r"['\"]\s*,\s*['\"]", parsed)
    if isinstance(parsed, str):
        parsed = [parsed]
    return clean_text(" ".join(str(part) for part in parsed))


ITEM_FIELDS = ("title", "description", "brand", "categories")


def load_items(path: Path) -> pd.DataFrame:
    """The catalog from `*.item.json`: item_id = the item index as a string.

    Each item is an object whose `title`, `description` and `brand` are strings (or null) and whose
    `categories` is a string or a list (of lists) of strings; anything else is a `SourceError` naming the
    item and the field, as a guessed text (a bool's "True") would reach the model as the item's words."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"source {SOURCE!r}: {path} is not valid UTF-8 JSON ({err}); expected index -> item") from err
    if not isinstance(data, dict):
        raise SourceError(f"source {SOURCE!r}: {path} must hold an object mapping item index -> item fields")
    records = []
    for key, item in data.items():
        item = _item_fields(path, key, item)
        records.append(
            {
                "item_id": str(key),
                "title": clean_text(item["title"]),
                "description": clean_description(item["description"]),
                "brand": clean_text(item["brand"]),
                "category": _category(item["categories"]),
                "price": np.nan,
            }
        )
    return pd.DataFrame.from_records(records, columns=[c.name for c in schema.TABLES["items"]])


def _item_fields(path: Path, key: str, item: object) -> dict[str, Any]:
    """One item's fields, checked (see `load_items`); missing or null text fields are ""."""
    where = f"source {SOURCE!r}: {path} item {key!r}"
    if item is None:
        item = {}
    if not isinstance(item, dict):
        raise SourceError(
            f"{where} is a {type(item).__name__} ({str(item)[:60]!r}); expected an object with {list(ITEM_FIELDS)}"
        )
    out: dict[str, Any] = {}
    for name in ("title", "description", "brand"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise SourceError(f"{where}: {name} is a {type(value).__name__} ({str(value)[:60]!r}); expected a string")
        out[name] = value or ""
    categories = item.get("categories")
    if not _is_categories(categories):
        raise SourceError(
            f"{where}: categories is {str(categories)[:60]!r}; expected a string or a list (of lists) of strings"
        )
    out["categories"] = categories
    return out


def _is_categories(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, list) and all(_is_categories(v) for v in value)


def _category(value: object) -> str:
    """`categories` may be empty, a string, or a list (of lists): keep the most specific label."""
    if isinstance(value, list):
        flat = [v for v in value if v]
        while flat and isinstance(flat[-1], list):
            flat = [v for v in flat[-1] if v]
        return clean_text(str(flat[-1])) if flat else ""
    return clean_text(str(value or ""))


def read_rows(path: Path, period: str) -> list[Row]:
    """The rows of one csv file (`user_id`, `history_item_id` as a list literal, `item_id`)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SourceError(
            f"source {SOURCE!r}: {path} is not a UTF-8 csv with columns user_id, history_item_id, item_id "
            f"({' '.join(str(err).split())[:200]})"
        ) from err
    missing = {"user_id", "history_item_id", "item_id"} - set(frame.columns)
    if missing:
        raise SourceError(f"source {SOURCE!r}: {path} lacks column(s) {sorted(missing)}; it has {list(frame.columns)}")
    rows = []
    for i, (user, history, target) in enumerate(
        zip(frame["user_id"], frame["history_item_id"], frame["item_id"], strict=True)
    ):
        try:
            ids = ast.literal_eval(history) if history.strip() else []
        except (ValueError, SyntaxError) as err:
            raise SourceError(
                f"source {SOURCE!r}: {path} line {i + 2}: history_item_id {history[:60]!r} is not a list"
            ) from err
        if isinstance(ids, int | str) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, list | tuple) or not all(
            isinstance(x, int | str) and not isinstance(x, bool) for x in ids
        ):
            raise SourceError(
                f"source {SOURCE!r}: {path} line {i + 2}: history_item_id {history[:60]!r} is not a list of item "
                "indices (integers or strings)"
            )
        rows.append(Row(str(user), tuple(str(x) for x in ids), str(target).strip(), period, i + 2))
    return rows


def merge_sequences(rows: list[Row]) -> tuple[dict[str, list[Position]], MergeReport]:
    """Chain each shopper's rows (in the given order: valid first, then test) into one item sequence."""
    by_user: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_user[row.user_id].append(row)
    report = MergeReport(users=len(by_user), rows=len(rows))
    sequences: dict[str, list[Position]] = {}
    for user, user_rows in by_user.items():
        seq: list[Position] = []
        first_test = True
        for row in user_rows:
            items = [p.item_id for p in seq]
            # where items absent from the sequence go: before the test period unless a test row adds them late
            late = row.period == "test" and not first_test
            if not seq:
                gap_period = "train"
            elif late:
                gap_period = "test"
            else:
                gap_period = "valid" if seq[-1].period != "train" else "train"
            history = list(row.history)
            if _continues(items, history):
                report.chained += 1
            else:
                k = _overlap(items, history)
                gap = history[k:]
                if seq:  # a first row's history is the sequence's start, not a repair
                    report.repaired += 1
                    report.gap_items += len(gap)
                    report.repaired_users.add(user)
                else:
                    report.chained += 1
                seq.extend(Position(i, gap_period, "view" if late else "purchase") for i in gap)
                items = [p.item_id for p in seq]
            if row.period == "test" and items[-HISTORY_LEN:] != history:
                report.unreproducible += 1
            seq.append(Position(row.target, row.period, "purchase"))
            if row.period == "test":
                first_test = False
        sequences[user] = seq
    if report.repaired or report.unreproducible:
        log.warning(
            "amazon2018: %d of %d rows (%d users) did not continue their shopper's sequence and were repaired "
            "(%d items inserted); %d test rows will not reproduce their file history",
            report.repaired,
            report.rows,
            len(report.repaired_users),
            report.gap_items,
            report.unreproducible,
        )
    return sequences, report


def _continues(items: list[str], history: list[str]) -> bool:
    """The history is exactly the sequence's last min(10, len) items."""
    return bool(items) and items[-HISTORY_LEN:] == history


def _overlap(items: list[str], history: list[str]) -> int:
    """The largest k such that the sequence ends with the history's first k items."""
    for k in range(min(len(items), len(history)), 0, -1):
        if items[-k:] == history[:k]:
            return k
    return 0


def sequences_to_events(sequences: dict[str, list[Position]], seed: int = TIMESTAMP_SEED) -> pd.DataFrame:
    """One event per sequence position; timestamps increase along each sequence, inside its period's window."""
    rng = np.random.default_rng(seed)
    records = []
    for user in sorted(sequences):
        seq = sequences[user]
        stamps = np.empty(len(seq), dtype="int64")
        for period, (lo, hi) in WINDOWS.items():
            idx = [i for i, p in enumerate(seq) if p.period == period]
            if not idx:
                continue
            n = len(idx)
            # stratified jitter: the j-th position falls in the j-th of n equal slices, so order is kept
            frac = (np.arange(n) + rng.uniform(0.05, 0.95, n)) / n
            span = (hi - lo).total_seconds()
            stamps[idx] = lo.value // 10**9 + np.floor(frac * span).astype("int64")
        for pos, (p, stamp) in enumerate(zip(seq, stamps, strict=True)):
            records.append((f"{user}-{pos}", user, p.item_id, p.event_type, None, stamp))
    frame = pd.DataFrame.from_records(records, columns=["event_id", "user_id", "item_id", "event_type", "query", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)


def load(path: str | Path) -> RawTables:
    """Read an `amazon2018-industrial`-format folder into the contract's tables (see the module docstring)."""
    folder = require_folder(path, SOURCE)
    items = load_items(find_one(folder, ITEM_SUFFIX, SOURCE))
    valid = read_rows(find_one(folder, VALID_SUFFIX, SOURCE), "valid")
    test = read_rows(find_one(folder, TEST_SUFFIX, SOURCE), "test")
    sequences, report = merge_sequences(valid + test)
    events = sequences_to_events(sequences)
    users = pd.DataFrame({"user_id": sorted(sequences)})
    log.info(
        "amazon2018: %d items, %d users, %d events from %d valid + %d test rows (%d chained, %d repaired)",
        len(items),
        len(users),
        len(events),
        len(valid),
        len(test),
        report.chained,
        report.repaired,
    )
    return RawTables(
        name=SOURCE,
        items=items,
        users=users,
        events=events,
        privacy_requests=schema.empty("privacy_requests"),
        split_time=SPLIT_TIME,
    )


def development_split(path: str | Path, out: Path) -> Path:
    """A development split of an `amazon2018-industrial` folder shaped like its test split, in the same format.

    Its data is what the model trains on for the test split: each shopper's sequence before `SPLIT_TIME`, as
    `load` recovers it (the valid rows, and each test row's history up to that shopper's first test target).
    Each shopper's last item there is held out as that shopper's case, its history the <= 10 items before it;
    the rest is training data. So the cases are next items of the same shoppers the test split trains on, over
    nearly the same item transitions, and no test target is read: model changes can be compared without fitting
    them to the rows the results are read on (benchmarks/quality.py --split dev). A shopper with one item
    before the test period has no case. Written to `out`; the item file is linked, not copied.
    """
    folder = require_folder(path, SOURCE)
    items = find_one(folder, ITEM_SUFFIX, SOURCE)
    valid, test = find_one(folder, VALID_SUFFIX, SOURCE), find_one(folder, TEST_SUFFIX, SOURCE)
    sequences, _ = merge_sequences(read_rows(valid, "valid") + read_rows(test, "test"))
    train_rows, case_rows = [], []
    for user, seq in sequences.items():
        before = [p.item_id for p in seq if p.period != "test"]  # periods run train, valid, test along a sequence
        if len(before) >= 2:
            case_rows.append((user, before[-HISTORY_LEN - 1 : -1], before[-1]))
            before = before[:-1]
        train_rows += _chain_rows(user, before)
    out.mkdir(parents=True, exist_ok=True)
    (out / items.name).symlink_to(items.resolve())
    stem = valid.name[: -len(VALID_SUFFIX)]
    for suffix, rows in ((VALID_SUFFIX, train_rows), (TEST_SUFFIX, case_rows)):
        frame = pd.DataFrame(
            [(u, repr(list(h)), t) for u, h, t in rows], columns=["user_id", "history_item_id", "item_id"]
        )
        frame.to_csv(out / f"{stem}{suffix}", index=False)
    return out


def _chain_rows(user: str, items: list[str]) -> list[tuple[str, list[str], str]]:
    """Rows in the file format whose chaining (`merge_sequences`) gives back `items`, however long."""
    if len(items) <= 1:  # no item (a shopper first seen in the test period), or one: a row with no history
        return [(user, [], item) for item in items]
    start = min(HISTORY_LEN, len(items) - 1)  # the first row's history opens the sequence
    rows = [(user, items[:start], items[start])]
    rows += [(user, items[j - HISTORY_LEN : j], items[j]) for j in range(start + 1, len(items))]
    return rows


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return load(request.path)
