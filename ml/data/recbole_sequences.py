"""Each shopper's ordered sequence from RecBole's `.inter` files, its periods, and the event times assigned to it.

The two shapes of `.inter` file (`sequences`: a history list and the next item per row; `interactions`: one
choice per row) give one sequence per shopper, each position labelled with its period (`train`, `valid`,
`test`): the benchmark file it came from, or by the leave-one-out protocol (`leave_one_out`). The files carry
no usable times, so `assign_times` places each period's items in that period's window (`WINDOWS`), keeping
each shopper's order; `TIMES_NOTE` says so in words for the model card. `ml.data.recbole`'s docstring gives
the rules in full.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ml.data.raw import SourceError
from ml.data.recbole_files import HISTORY, ITEM, TIME, USER, AtomicFile, where

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
            f"{where(Path(row['file']), int(row['line']))}: shopper {row['user_id']!r}'s history does not "
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
        raise SourceError(f"{where(atomic.path, int(atomic.rows['line'][at]))}: timestamp {raw[at]!r} is not a number")
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
