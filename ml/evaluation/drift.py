"""The per-event columns whose distributions the drift report compares, between a reference and a current window."""

from __future__ import annotations

import pandas as pd


def drift_frame(events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per-event columns whose distribution the drift report compares (no shopper ids: the report is shared)."""
    ev = events.merge(items[["item_id", "category", "price"]], on="item_id", how="left")
    return pd.DataFrame(
        {
            "event_type": ev["event_type"].astype(str),
            "category": ev["category"].fillna("(search)").astype(str),
            "price": pd.to_numeric(ev["price"], errors="coerce"),
            "hour_of_day": pd.to_datetime(ev["ts"], utc=True).dt.hour,
            "query_length": ev["query"].fillna("").astype(str).str.split().map(len),
        }
    )


def drift_frames(
    reference: pd.DataFrame, current: pd.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both drift frames, keeping only columns with values on both sides (a source may lack prices)."""
    ref, cur = drift_frame(reference, items), drift_frame(current, items)
    keep = [c for c in ref.columns if ref[c].notna().any() and cur[c].notna().any()]
    return ref[keep], cur[keep]
