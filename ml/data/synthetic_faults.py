"""The synthetic shop's contract breakers: about 0.2% extra rows the data contract must reject.

Events with an unknown event type, a missing user id, a search without a query, a duplicate event id or an
unparseable timestamp; items with a negative price. They are added rows drawn from their own random stream (see
`ml.data.synthetic.generate`), so the clean rows are the same with or without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ml.data.synthetic_behaviour import Behaviour


def bad_events(rng: np.random.Generator, events: pd.DataFrame, cfg: Behaviour) -> pd.DataFrame:
    """Add ~0.2% rows that break the contract, one kind after another, at random places in the log."""
    kinds = (
        "unknown event_type",
        "missing user_id",
        "search without query",
        "duplicate event_id",
        "unparseable ts",
    )
    n = max(len(kinds), round(cfg.bad_row_share * len(events)))
    picked = rng.choice(len(events), size=n, replace=True)
    source = events.iloc[picked].reset_index(drop=True)
    bad = source.copy()
    positions = rng.integers(0, len(events) + 1, n)  # a bad row goes before the clean row at this position
    next_id = len(events)
    for k in range(n):
        kind = kinds[k % len(kinds)]
        bad.at[k, "event_id"] = f"e{next_id + k:07d}"
        if kind == "unknown event_type":
            bad.at[k, "event_type"] = ("wishlist", "share", "CLICK")[rng.integers(3)]
        elif kind == "missing user_id":
            bad.at[k, "user_id"] = None if rng.random() < 0.5 else ""
        elif kind == "search without query":
            bad.at[k, "event_type"], bad.at[k, "item_id"], bad.at[k, "query"] = "search", None, None
        elif kind == "duplicate event_id":  # a replay of an earlier event, later in the log
            bad.at[k, "event_id"] = source.at[k, "event_id"]
            positions[k] = rng.integers(picked[k] + 1, len(events) + 1)
        else:
            bad.at[k, "ts"] = ("2026-02-30T25:61:00Z", "yesterday", "n/a")[rng.integers(3)]
    combined = pd.concat([events, bad], ignore_index=True)
    # spread the bad rows through the log, keep the clean rows in order
    by_position = np.argsort(positions, kind="stable")
    order = np.insert(np.arange(len(events)), positions[by_position], len(events) + by_position)
    return combined.iloc[order].reset_index(drop=True)


def bad_items(rng: np.random.Generator, items: pd.DataFrame, cfg: Behaviour) -> pd.DataFrame:
    """Add ~0.2% (at least one) catalog rows with a negative price."""
    n = max(1, round(cfg.bad_row_share * len(items)))
    bad = items.iloc[rng.choice(len(items), size=n, replace=False)].reset_index(drop=True).copy()
    bad["item_id"] = [f"i{len(items) + k:05d}" for k in range(n)]
    bad["price"] = -bad["price"].abs()
    return pd.concat([items, bad], ignore_index=True)
