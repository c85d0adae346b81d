import pandas as pd

from ml.data import lake


def _events(ids):
    return pd.DataFrame(
        {
            "event_id": ids,
            "user_id": ["u1"] * len(ids),
            "item_id": ["i"] * len(ids),
            "event_type": ["click"] * len(ids),
            "query": [None] * len(ids),
            "ts": pd.to_datetime(["2026-01-01"] * len(ids), utc=True),
        }
    )


def test_rewriting_a_date_gives_the_same_content(tmp_path):
    p1 = lake.write_partition(tmp_path, "events", "2026-01-02", _events(["b", "a"]))
    first = pd.read_parquet(p1)
    lake.write_partition(tmp_path, "events", "2026-01-02", _events(["a", "b"]))
    second = pd.read_parquet(p1)
    pd.testing.assert_frame_equal(first, second)
    assert first["event_id"].tolist() == ["a", "b"]
    assert len(lake.partitions(tmp_path, "events")) == 1


def test_reading_keeps_the_newest_partition_per_key(tmp_path):
    old = _events(["a", "b"])
    new = _events(["b", "c"]).assign(item_id="j")
    lake.write_partition(tmp_path, "events", "2026-01-01", old)
    lake.write_partition(tmp_path, "events", "2026-01-02", new)
    got = lake.read_table(tmp_path, "events").set_index("event_id")
    assert sorted(got.index) == ["a", "b", "c"]
    assert got.loc["b", "item_id"] == "j"


def test_purge_rewrites_every_partition_but_keeps_the_deletion_request(tmp_path):
    lake.write_partition(tmp_path, "events", "2026-01-01", _events(["a"]))
    lake.write_partition(tmp_path, "events", "2026-01-02", _events(["b"]).assign(user_id="u2"))
    reqs = pd.DataFrame({"user_id": ["u1"], "request": ["delete"], "ts": pd.to_datetime(["2026-01-02"], utc=True)})
    lake.write_partition(tmp_path, "privacy_requests", "2026-01-02", reqs)
    assert lake.purge_users(tmp_path, {"u1"}) == 1
    assert lake.read_table(tmp_path, "events")["user_id"].tolist() == ["u2"]
    assert lake.read_table(tmp_path, "privacy_requests")["user_id"].tolist() == ["u1"]


def _requests(users, kinds, ts="2026-01-02"):
    return pd.DataFrame({"user_id": users, "request": kinds, "ts": pd.to_datetime([ts] * len(users), utc=True)})


def test_privacy_requests_are_a_ledger_a_rewrite_of_the_date_never_shrinks(tmp_path):
    path = lake.append_privacy_requests(tmp_path, "2026-01-02", _requests(["u1", "u2"], ["opt_out", "delete"]))
    first = path.read_bytes()
    lake.append_privacy_requests(tmp_path, "2026-01-02", _requests(["u2", "u1"], ["delete", "opt_out"]))
    assert path.read_bytes() == first  # the same requests again: the same bytes
    lake.append_privacy_requests(tmp_path, "2026-01-02", _requests(["u3"], ["opt_out"], ts="2026-01-03"))
    lake.append_privacy_requests(tmp_path, "2026-01-02", _requests([], []))
    got = lake.read_table(tmp_path, "privacy_requests")
    assert sorted(zip(got["user_id"], got["request"], strict=True)) == [
        ("u1", "opt_out"),
        ("u2", "delete"),
        ("u3", "opt_out"),
    ]
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"
