import pandas as pd
import pytest

from ml.data.schema import ContractError, validate


def _events(**overrides):
    base = {
        "event_id": ["e1", "e2", "e3", "e4", "e5", "e5", "e7", "e8"],
        "user_id": ["u1", None, "u1", "u2", "u2", "u3", "u3", "u4"],
        "item_id": ["i1", "i1", None, "i1", "i9", "i1", "i1", "i1"],
        "event_type": ["click", "click", "search", "teleport", "click", "click", "view", "click"],
        "query": [None, None, "  ", None, None, None, None, None],
        "ts": ["2026-01-01T00:00:00Z"] * 6 + ["not a time", "2026-01-02"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_every_bad_row_is_quarantined_with_its_reason_and_none_is_lost():
    df = _events()
    good, bad = validate("events", df, known_items={"i1"})
    assert len(good) + len(bad) == len(df)
    assert list(zip(bad["event_id"], bad["reason"], strict=True)) == [
        ("e2", "user_id is missing"),
        ("e3", "search event without query"),
        ("e4", "event_type not in ('view', 'click', 'add_to_cart', 'purchase', 'rating', 'search')"),
        ("e5", "item_id not in catalog"),
        ("e5", "duplicate event_id"),
        ("e7", "ts is not a timestamp"),
    ]
    assert set(good["event_id"]) == {"e1", "e8"}
    assert str(good["ts"].dtype) == "datetime64[ns, UTC]"


def test_duplicate_keys_are_quarantined_after_the_first():
    items = pd.DataFrame(
        {
            "item_id": ["a", "a"],
            "title": ["x", "y"],
            "description": ["", ""],
            "brand": ["b", "b"],
            "category": ["c", "c"],
            "price": [1.0, -2.0],
        }
    )
    good, bad = validate("items", items)
    assert good["title"].tolist() == ["x"]
    assert bad["reason"].tolist() == ["price is negative"]


def test_missing_column_is_a_contract_error_naming_it():
    with pytest.raises(ContractError, match="lacks required column"):
        validate("users", pd.DataFrame({"id": ["u"]}))


def test_privacy_request_kinds_are_checked():
    df = pd.DataFrame({"user_id": ["u", "v"], "request": ["delete", "forget"], "ts": ["2026-01-01", "2026-01-01"]})
    good, bad = validate("privacy_requests", df)
    assert good["user_id"].tolist() == ["u"] and bad["reason"].str.startswith("request not in").all()
