"""The temporal split: what the model may learn from, and the hold-out cases it is judged on.

A shopper's *sequence* is their interaction events (click, add_to_cart, purchase, rating) in time
order, with one funnel collapsed: the same item met again straight away under a different event type
(click -> add_to_cart -> purchase) counts once. Repeats of the same kind (buying an item twice) stay.

- training examples: each sequence position before `split_time` (its history -> its item), and each
  search followed by a click or purchase (query -> item);
- hold-out cases: each sequence position at or after `split_time`, its history being everything the
  shopper did before it (at that moment those items were known).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ml.data.schema import INTERACTION_TYPES


@dataclass(frozen=True)
class Split:
    split_time: pd.Timestamp
    sequences: pd.DataFrame  # user_id, item_id, ts, position: the collapsed interaction sequence
    train: pd.DataFrame  # user_id, ts, item_id, kind ("next_item"|"search"), query
    cases: pd.DataFrame  # user_id, ts, item_id (the target)


def interaction_sequences(events: pd.DataFrame) -> pd.DataFrame:
    """The collapsed, ordered interaction sequence of every shopper."""
    ev = events[events["event_type"].isin(INTERACTION_TYPES) & events["item_id"].notna()]
    ev = ev.sort_values(["user_id", "ts", "event_id"], kind="mergesort")
    same_user = ev["user_id"].eq(ev["user_id"].shift())
    same_item = ev["item_id"].eq(ev["item_id"].shift())
    other_kind = ev["event_type"].ne(ev["event_type"].shift())
    funnel = same_user & same_item & other_kind
    seq = ev[~funnel][["user_id", "item_id", "ts"]].reset_index(drop=True)
    seq["position"] = seq.groupby("user_id").cumcount()
    return seq


def search_examples(events: pd.DataFrame) -> pd.DataFrame:
    """A search followed (next event of that shopper) by a click, cart or purchase: query -> item."""
    ev = events.sort_values(["user_id", "ts", "event_id"], kind="mergesort")
    nxt = ev.groupby("user_id")[["event_type", "item_id"]].shift(-1)
    hit = (ev["event_type"] == "search") & nxt["event_type"].isin(INTERACTION_TYPES) & nxt["item_id"].notna()
    out = ev.loc[hit, ["user_id", "ts", "query"]].copy()
    out["item_id"] = nxt.loc[hit, "item_id"]
    return out.reset_index(drop=True)


def temporal_split(events: pd.DataFrame, split_time: pd.Timestamp) -> Split:
    seq = interaction_sequences(events)
    before = seq["ts"] < split_time
    next_item = seq[before & (seq["position"] > 0)][["user_id", "ts", "item_id"]].assign(kind="next_item", query=None)
    searches = search_examples(events[events["ts"] < split_time]).assign(kind="search")
    train = pd.concat([next_item, searches], ignore_index=True).sort_values(["user_id", "ts"], kind="mergesort")
    cases = seq[~before & (seq["position"] > 0)][["user_id", "ts", "item_id"]]
    return Split(
        split_time=split_time,
        sequences=seq,
        train=train.reset_index(drop=True),
        cases=cases.reset_index(drop=True),
    )
