"""Feature tables for Feast, computed from the lake (pure functions, plus one writer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ml.data.splits import interaction_sequences

if TYPE_CHECKING:
    from feast import FeatureStore

# a shopper's recent items travel as one string feature joined by the ASCII unit separator: Feast's file
# offline store (dask) hashes a string column in one pass, but pickles a list column row by row (minutes)
HISTORY_SEP = "\x1f"


def encode_history(items: list[str]) -> str:
    return HISTORY_SEP.join(items)


def decode_history(value: object) -> list[str]:
    """Item ids, oldest first, from the feature's value ([] for a missing value)."""
    return [i for i in value.split(HISTORY_SEP) if i] if isinstance(value, str) else []


def item_feature_frame(items: pd.DataFrame, sequences: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    counts = sequences["item_id"].value_counts()
    out = items[["item_id", "title", "brand", "category"]].copy()
    out["n_interactions"] = out["item_id"].map(counts).fillna(0).astype("int64")
    out["event_timestamp"] = as_of
    return out


def user_event_frame(events: pd.DataFrame, max_history: int) -> pd.DataFrame:
    """One row per interaction: the shopper's last `max_history` items (oldest first) including it."""
    seq = interaction_sequences(events)
    rows_recent: list[list[str]] = []
    for _, group in seq.groupby("user_id", sort=False):
        items = group["item_id"].tolist()
        rows_recent.extend(items[max(0, i + 1 - max_history) : i + 1] for i in range(len(items)))
    # interaction_sequences sorts by shopper, so groupby(sort=False) walked the rows in seq's order
    out = seq[["user_id", "ts"]].rename(columns={"ts": "event_timestamp"}).reset_index(drop=True)
    out["recent_items"] = [encode_history(r) for r in rows_recent]
    out["history_length"] = seq["position"].to_numpy() + 1
    out["n_interactions"] = out["history_length"].astype("int64")
    ev = events.sort_values(["user_id", "ts"], kind="mergesort")
    searches = ev.assign(s=(ev["event_type"] == "search").astype(int), p=(ev["event_type"] == "purchase").astype(int))
    searches[["s", "p"]] = searches.groupby("user_id")[["s", "p"]].cumsum()
    cum = searches[["user_id", "ts", "s", "p"]].rename(columns={"ts": "event_timestamp"})
    out = pd.merge_asof(
        out.sort_values("event_timestamp"),
        cum.sort_values("event_timestamp"),
        on="event_timestamp",
        by="user_id",
        direction="backward",
    )
    out = out.rename(columns={"s": "n_searches", "p": "n_purchases"})
    out[["n_searches", "n_purchases"]] = out[["n_searches", "n_purchases"]].fillna(0).astype("int64")
    return out.sort_values(["user_id", "event_timestamp"], kind="mergesort").reset_index(drop=True)


def write_feature_tables(
    data_dir: Path, items: pd.DataFrame, events: pd.DataFrame, max_history: int, as_of: pd.Timestamp
) -> dict[str, str]:
    """Write the two source files Feast reads; returns their paths."""
    data_dir.mkdir(parents=True, exist_ok=True)
    seq = interaction_sequences(events)
    paths = {"items": data_dir / "items.parquet", "user_events": data_dir / "user_events.parquet"}
    item_feature_frame(items, seq, as_of).to_parquet(paths["items"], index=False)
    user_event_frame(events, max_history).to_parquet(paths["user_events"], index=False)
    return {k: str(v) for k, v in paths.items()}


RECENT_ITEMS = "user_recent_items:recent_items"  # the feature a row's history is read from


def with_history(store: FeatureStore, rows: pd.DataFrame, max_history: int) -> pd.DataFrame:
    """`rows` with each row's history (item ids, oldest first, at most `max_history`) as the feature store knew it
    just before the row's own event: a point-in-time read, so no row sees its own target."""
    import numpy as np

    from ml.features.store import historical_features

    if rows.empty:
        return rows.assign(history=[])
    entity = pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(),
            "row_id": np.arange(len(rows)),
            "event_timestamp": pd.to_datetime(rows["ts"], utc=True) - pd.Timedelta(microseconds=1),
        }
    )
    got = historical_features(store, entity, [RECENT_ITEMS])
    # a row from before the shopper's first interaction has no feature row: its history is empty
    by_row = dict(zip(got["row_id"], got["recent_items"], strict=True))
    history = [decode_history(by_row.get(i))[-max_history:] for i in range(len(rows))]
    return rows.reset_index(drop=True).assign(history=history)
