"""Feast: apply, materialize, and a point-in-time training set that matches a hand-rolled reference."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from ml.data.splits import temporal_split
from ml.features import store as fs
from ml.features.build import decode_history, user_event_frame, with_history, write_feature_tables
from tests.oracles import histories_before, online_features


@pytest.fixture(scope="module")
def synthetic():
    from ml.data.schema import validate
    from ml.data.synthetic import generate

    raw = generate(n_users=150, n_items=120, seed=3, bad_rows=False)
    items, _ = validate("items", raw.items)
    events, _ = validate("events", raw.events, known_items=set(items["item_id"]))
    return items, events, raw.split_time


def test_user_event_frame_holds_the_last_items_including_the_current_one(synthetic):
    _, events, _ = synthetic
    frame = user_event_frame(events, max_history=3)
    one = frame[frame["user_id"] == frame["user_id"].iloc[0]]
    assert one["history_length"].tolist() == list(range(1, len(one) + 1))
    for recent, n in zip(one["recent_items"], one["history_length"], strict=True):
        assert len(decode_history(recent)) == min(3, n)


def test_point_in_time_histories_match_the_reference_and_never_include_the_target(synthetic, tmp_path):
    items, events, split_time = synthetic
    data_dir = tmp_path / "features"
    write_feature_tables(data_dir, items, events, 10, pd.Timestamp(datetime.now(UTC)))
    store = fs.open_store(fs.repo_config(tmp_path / "feast"))
    names = fs.apply_definitions(store, data_dir)
    assert {"user_recent_items", "user_activity", "item_features", "recommender"} <= set(names)
    fs.materialize(store, datetime.now(UTC))

    split = temporal_split(events, split_time)
    rows = split.train[split.train["kind"] == "next_item"].head(300)
    got = with_history(store, rows, 10)
    expected = histories_before(split.sequences, rows, 10)
    assert got["history"].tolist() == expected
    assert any(len(h) for h in expected)

    # the online store serves each shopper's latest state
    user = rows["user_id"].iloc[0]
    online = online_features(store, [user], ["user_recent_items:recent_items"])
    last = split.sequences[split.sequences["user_id"] == user]["item_id"].tolist()[-10:]
    assert decode_history(online["recent_items"][0]) == last
