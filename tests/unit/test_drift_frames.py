"""The drift report's per-event columns: no shopper ids, searches as their own category, unpriced sources."""

from __future__ import annotations

import pandas as pd

from ml.evaluation.drift import drift_frame, drift_frames

ITEMS = pd.DataFrame({"item_id": ["a", "b"], "category": ["toys", "games"], "price": [3.5, None]})


def _events(rows: list[tuple[str, str | None, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "query"]).assign(
        ts=pd.Timestamp("2026-01-01 13:30", tz="UTC")
    )


def test_each_event_gets_its_category_price_hour_and_query_length_and_no_shopper():
    frame = drift_frame(_events([("u1", "a", "click", None), ("u2", None, "search", "red fire truck")]), ITEMS)
    assert "user_id" not in frame.columns
    assert frame["category"].tolist() == ["toys", "(search)"]
    assert frame["price"].iloc[0] == 3.5 and pd.isna(frame["price"].iloc[1])
    assert frame["hour_of_day"].tolist() == [13, 13]
    assert frame["query_length"].tolist() == [0, 3]


def test_a_column_empty_on_either_side_is_left_out():
    ref, cur = drift_frames(_events([("u1", "a", "click", None)]), _events([("u2", "b", "click", None)]), ITEMS)
    assert "price" not in ref.columns and "price" not in cur.columns  # b has no price
    assert list(ref.columns) == list(cur.columns)
