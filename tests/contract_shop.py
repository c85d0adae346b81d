"""The small shop the contract-table sources' tests read (the `files` and `sql` sources): three items, three
shoppers, ten days of events among which an unknown item, a search with no item, and prices and descriptions
missing."""

from __future__ import annotations

from typing import Any

import pandas as pd


def shop_tables(
    item_ids: tuple[Any, Any, Any] = ("a", "b", "c"), unknown: Any = "zz"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, events) with these three item ids (a source may hold them as text or as integers) and `unknown`
    for the item id no item has."""
    a, b, c = item_ids
    items = pd.DataFrame(
        {
            "item_id": [a, b, c],
            "title": ["Tent", "Stove", "Mug"],
            "description": ["", "gas", None],
            "brand": ["X", "Y", "X"],
            "category": ["camp"] * 3,
            "price": [100.0, 20.5, None],
        }
    )
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(10)],
            "user_id": ["u1", "u1", "u2", "u2", "u1", "u2", "u3", "u3", "u1", "u2"],
            "item_id": [a, b, a, c, c, b, a, unknown, None, b],
            "event_type": [
                "view",
                "purchase",
                "click",
                "purchase",
                "click",
                "purchase",
                "view",
                "click",
                "search",
                "click",
            ],
            "query": [None] * 8 + ["tent", None],
            "ts": pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC"),
        }
    )
    return items, events
