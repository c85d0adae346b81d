import pandas as pd

from ml.data.splits import interaction_sequences, search_examples, temporal_split
from tests.oracles import histories_before


def _ev(rows):
    df = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "event_type", "query", "ts"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


EVENTS = _ev(
    [
        ("1", "u", "a", "click", None, "2026-01-01 10:00"),
        ("2", "u", "a", "add_to_cart", None, "2026-01-01 10:01"),  # funnel: collapses into the click
        ("3", "u", "a", "purchase", None, "2026-01-01 10:02"),
        ("4", "u", None, "search", "red shoe", "2026-01-02 10:00"),
        ("5", "u", "b", "click", None, "2026-01-02 10:01"),
        ("6", "u", "b", "purchase", None, "2026-01-05 10:00"),  # after the split; same item, other kind -> collapsed
        ("7", "u", "c", "purchase", None, "2026-01-06 10:00"),
        ("8", "u", "c", "purchase", None, "2026-01-07 10:00"),  # a repeat of the same kind stays
        ("9", "v", "x", "view", None, "2026-01-01 10:00"),  # views are not interactions
    ]
)


def test_sequences_collapse_the_funnel_but_keep_repeat_purchases():
    seq = interaction_sequences(EVENTS)
    assert seq[seq["user_id"] == "u"]["item_id"].tolist() == ["a", "b", "c", "c"]
    assert "v" not in set(seq["user_id"])


def test_search_followed_by_a_click_is_a_query_example():
    got = search_examples(EVENTS)
    assert got[["query", "item_id"]].values.tolist() == [["red shoe", "b"]]


def test_temporal_split_trains_before_and_evaluates_after():
    split = temporal_split(EVENTS, pd.Timestamp("2026-01-04", tz="UTC"))
    assert split.train[split.train["kind"] == "next_item"]["item_id"].tolist() == ["b"]
    assert split.cases["item_id"].tolist() == ["c", "c"]
    hist = histories_before(split.sequences, split.cases, max_history=10)
    assert hist == [["a", "b"], ["a", "b", "c"]]
