from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from ml.privacy.consent import (
    ConsentResult,
    append_deletion_log,
    apply_privacy_requests,
    read_deletion_log,
)

A, B, C, Z = ("u_" + c * 32 for c in "abcf")  # pseudonyms of four shoppers; Z has no data


def ts(day: int) -> pd.Timestamp:
    return pd.Timestamp(f"2024-01-{day:02d}T12:00:00Z")


@pytest.fixture
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(9)],
            "user_id": [A, A, A, B, B, B, B, C, C],
            "item_id": ["i1", "i2", "i3", "i1", "i2", "i3", "i4", "i1", "i2"],
            "event_type": ["click"] * 9,
            "query": [None] * 9,
            "ts": [ts(1), ts(5), ts(9), ts(1), ts(4), ts(5), ts(9), ts(2), ts(8)],
        }
    )
    users = pd.DataFrame({"user_id": [A, B, C], "gender": ["f", "m", "f"]})
    return events, users


def requests(*rows: tuple[str, str, pd.Timestamp]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "request", "ts"])


def test_delete_and_opt_out(frames):
    events, users = frames
    req = requests((A, "delete", ts(3)), (B, "opt_out", ts(5)), (Z, "delete", ts(1)))
    result = apply_privacy_requests(events, users, req)
    assert isinstance(result, ConsentResult)
    # A: every event goes, also those before the request; B: events at or after day 5 go; C untouched
    assert list(result.events["event_id"]) == ["e3", "e4", "e7", "e8"]
    assert list(result.users["user_id"]) == [B, C]
    assert result.deleted == {A, Z}
    assert result.opted_out == {B: ts(5)}
    assert result.counts == {"events_removed_deleted": 3, "events_removed_opt_out": 2, "users_deleted": 1}
    assert len(events) == 9 and len(users) == 3  # inputs untouched


def test_repeated_requests_count_once_and_earliest_opt_out_wins(frames):
    events, users = frames
    req = requests((B, "opt_out", ts(9)), (B, "opt_out", ts(4)), (C, "delete", ts(8)), (C, "delete", ts(9)))
    result = apply_privacy_requests(events, users, req)
    assert result.opted_out == {B: ts(4)}  # no opt-in exists: the later opt-out gives nothing back
    assert result.deleted == {C}
    assert list(result.events["event_id"]) == ["e0", "e1", "e2", "e3"]
    assert result.counts == {"events_removed_deleted": 2, "events_removed_opt_out": 3, "users_deleted": 1}


def test_opt_out_and_delete_of_one_shopper_count_as_deletion(frames):
    events, users = frames
    result = apply_privacy_requests(events, users, requests((A, "opt_out", ts(2)), (A, "delete", ts(6))))
    assert result.counts == {"events_removed_deleted": 3, "events_removed_opt_out": 0, "users_deleted": 1}


def test_no_requests_changes_nothing(frames):
    events, users = frames
    result = apply_privacy_requests(events, users, requests())
    assert result.events.equals(events) and result.users.equals(users)
    assert result.deleted == set() and result.opted_out == {}
    assert result.counts == {"events_removed_deleted": 0, "events_removed_opt_out": 0, "users_deleted": 0}


def test_naive_and_string_times_are_utc(frames):
    events, users = frames
    req = pd.DataFrame({"user_id": [B], "request": ["opt_out"], "ts": ["2024-01-05 12:00:00"]})
    result = apply_privacy_requests(events, users, req)
    assert list(result.events["event_id"]) == ["e0", "e1", "e2", "e3", "e4", "e7", "e8"]


def test_bad_requests_are_refused(frames):
    events, users = frames
    with pytest.raises(ValueError, match="unknown privacy request"):
        apply_privacy_requests(events, users, requests((A, "forget", ts(1))))
    with pytest.raises(ValueError, match="lacks column"):
        apply_privacy_requests(events, users, pd.DataFrame({"user_id": [A]}))


def test_deletion_log_appends_without_duplicates(tmp_path):
    path = tmp_path / "privacy" / "deletions.jsonl"
    when = datetime(2024, 2, 1, 10, 0, tzinfo=UTC)
    assert append_deletion_log(path, [A, B, A], when) == 2
    assert append_deletion_log(path, [B, C], datetime(2024, 2, 2, 10, 0)) == 1  # naive time = UTC
    assert append_deletion_log(path, [], when) == 0
    entries = read_deletion_log(path)
    assert [e["pseudonym_sha256"] for e in entries] == [hashlib.sha256(p.encode()).hexdigest() for p in (A, B, C)]
    assert [e["deleted_at"] for e in entries] == [
        "2024-02-01T10:00:00+00:00",
        "2024-02-01T10:00:00+00:00",
        "2024-02-02T10:00:00+00:00",
    ]
    text = path.read_text()
    assert all(p not in text and p[2:] not in text for p in (A, B, C))  # no usable id in the log
    assert all(set(json.loads(line)) == {"pseudonym_sha256", "deleted_at"} for line in text.splitlines())


def test_deletion_log_refuses_raw_ids(tmp_path):
    with pytest.raises(ValueError, match="pseudonymize first"):
        append_deletion_log(tmp_path / "log.jsonl", ["alice@example.com"], datetime.now(UTC))
    assert not (tmp_path / "log.jsonl").exists()


def test_read_deletion_log(tmp_path):
    assert read_deletion_log(tmp_path / "absent.jsonl") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pseudonym_sha256": "x", "deleted_at": "y"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_deletion_log(bad)
