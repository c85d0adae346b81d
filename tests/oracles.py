"""Reference readers the tests check the product against: plain, slow, obviously right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore

from ml.serving.feedback import impressions_dir


def histories_before(sequences: pd.DataFrame, rows: pd.DataFrame, max_history: int) -> list[list[str]]:
    """For each (user_id, ts) row: the shopper's sequence items strictly before ts, oldest first, last N.

    The reference the feature store's point-in-time join and the sources' hold-outs are checked against.
    """
    by_user = {u: (_ns(g["ts"]), g["item_id"].to_numpy()) for u, g in sequences.groupby("user_id", sort=False)}
    out: list[list[str]] = []
    for user, ts in zip(rows["user_id"], rows["ts"], strict=True):
        if user not in by_user:
            out.append([])
            continue
        times, items = by_user[user]
        n = int(np.searchsorted(times, pd.Timestamp(ts).value, side="left"))
        out.append([str(i) for i in items[max(0, n - max_history) : n]])
    return out


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds since the epoch."""
    return pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)


def read_impressions(home: Path, day: str | None = None) -> list[dict[str, Any]]:
    """Every complete impression line under `home` (one day, or all), in file order."""
    base = impressions_dir(home)
    folders = [base / f"date={day}"] if day else sorted(base.glob("date=*"))
    out: list[dict[str, Any]] = []
    for folder in folders:
        for path in sorted(folder.glob("part-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n") and line.strip():
                    out.append(json.loads(line))
    return out


def online_features(store: FeatureStore, user_ids: list[str], features: list[str]) -> dict[str, list]:
    return store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
