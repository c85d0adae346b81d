"""Ingestion of hostile source files: PII in any column, extra columns, wrong types, infinities, huge strings,
lone surrogates and numeric timestamps. Each source table is written to a real file (parquet, JSON, CSV) and
read back as an adapter would, then ingested; the lake and the quarantine files are read back from disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.data import lake, schema
from ml.data.ingest import IngestResult, ingest
from ml.data.sources import RawTables
from ml.privacy.pii import PIIScrubber
from ml.privacy.pseudonymize import Pseudonymizer

DATE = "2026-02-01"
EMAIL, PHONE, IP, CARD = "jane.roe@example.com", "+1 212-431-6100", "203.0.113.42", "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def scrubber() -> PIIScrubber:
    return PIIScrubber()


def _parquet(path: Path, table: pa.Table) -> pd.DataFrame:
    pq.write_table(table, path)
    return pq.read_table(path).to_pandas()


def _ingest(tmp_path: Path, scrubber: PIIScrubber, **tables: pd.DataFrame) -> IngestResult:
    raw = RawTables(
        name="files",
        items=tables.get("items", schema.empty("items")),
        users=tables.get("users", schema.empty("users")),
        events=tables.get("events", schema.empty("events")),
        privacy_requests=tables.get("privacy_requests", schema.empty("privacy_requests")),
        split_time=pd.Timestamp("2026-01-15", tz="UTC"),
    )
    return ingest(raw, tmp_path / "lake", Pseudonymizer(b"k" * 32), scrubber, DATE)


def _every_value_on_disk(lake_dir: Path) -> str:
    """Every cell of every parquet file under the lake (quarantine included), as one text."""
    frames = [pq.read_table(p).to_pandas() for p in sorted(lake_dir.rglob("*.parquet"))]
    assert frames
    return "\n".join(frame.astype(str).to_csv(index=False) for frame in frames)


def _quarantine(result: IngestResult) -> pd.DataFrame:
    return pd.read_parquet(result.quarantine_path)


def test_pii_in_any_column_and_any_extra_column_never_reaches_the_lake_or_the_quarantine(tmp_path, scrubber, caplog):
    items_csv = tmp_path / "items.csv"
    items_csv.write_text(
        "item_id,title,description,brand,category,price,seller_contact\n"
        f"i1,Lamp,A lamp,Sold by {EMAIL},Call {PHONE},10,{EMAIL}\n"
        f"i2,Desk,A desk,Acme,Office,-3,{PHONE}\n"  # a negative price: quarantined, with its PII
        f"{EMAIL},Chair,A chair,Acme,Office,5,\n"  # a key that holds PII: it cannot be scrubbed, so quarantined
    )
    users_csv = tmp_path / "users.csv"
    users_csv.write_text(f"user_id,gender,region,contact\nshopper-1,f,{PHONE},{EMAIL}\n")
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["shopper-1"] * 3,
            "item_id": ["i1", None, "i1"],
            "event_type": ["click", "search", "teleport"],
            "query": [None, f"card {CARD}", f"mail {EMAIL}"],
            "ts": ["2026-01-20T10:00:00Z"] * 3,
            "client_ip": [IP, IP, IP],
            "user_agent": ["x", "y", EMAIL],
        }
    )
    events_json = tmp_path / "events.json"
    events.to_json(events_json, orient="records")

    caplog.set_level(logging.INFO, logger="ml.data.ingest")
    result = _ingest(
        tmp_path,
        scrubber,
        items=pd.read_csv(items_csv, dtype=str),
        users=pd.read_csv(users_csv, dtype=str),
        events=pd.read_json(events_json, dtype=False),
    )

    on_disk = _every_value_on_disk(tmp_path / "lake")
    for pii in (EMAIL, PHONE, IP, CARD, "212-431-6100", "jane.roe"):
        assert pii not in on_disk, pii
    assert result.dropped_columns == {"items": ["seller_contact"], "events": ["client_ip", "user_agent"]}
    assert result.metrics()["ingest.events.dropped_columns"] == 2
    assert "dropped column(s) ['client_ip', 'user_agent']" in caplog.text
    items = lake.read_table(tmp_path / "lake", "items")
    assert items.loc[items["item_id"] == "i1", ["brand", "category"]].values.tolist() == [
        ["Sold by <EMAIL_ADDRESS>", "Call <PHONE_NUMBER>"]
    ]
    users = lake.read_table(tmp_path / "lake", "users")
    assert users[["region", "contact"]].values.tolist() == [["<PHONE_NUMBER>", "<EMAIL_ADDRESS>"]]
    quarantine = _quarantine(result)
    assert sorted(quarantine["reason"]) == [
        "event_type not in ('view', 'click', 'add_to_cart', 'purchase', 'rating', 'search')",
        "item_id holds PII (EMAIL_ADDRESS)",
        "price is negative",
    ]
    assert quarantine.loc[quarantine["reason"] == "item_id holds PII (EMAIL_ADDRESS)", "item_id"].tolist() == [
        "<EMAIL_ADDRESS>"
    ]
    assert result.pii_replaced["EMAIL_ADDRESS"] >= 4 and result.pii_replaced["PHONE_NUMBER"] >= 2


def test_numeric_timestamps_are_seconds_since_the_epoch_not_nanoseconds(tmp_path, scrubber):
    seconds = int(pd.Timestamp("2026-01-20T10:00:00Z").timestamp())
    items = pd.DataFrame(
        {"item_id": ["i1"], "title": ["Lamp"], "description": [""], "brand": ["A"], "category": ["C"], "price": [1.0]}
    )
    events = _parquet(
        tmp_path / "events.parquet",
        pa.table(
            {
                "event_id": ["e1", "e2"],
                "user_id": ["s1", "s1"],
                "item_id": ["i1", "i1"],
                "event_type": ["click"] * 2,
                "query": pa.array([None, None], pa.string()),
                "ts": pa.array([seconds, seconds + 60], pa.int64()),
            }
        ),
    )
    requests = _parquet(
        tmp_path / "requests.parquet",
        pa.table({"user_id": ["s2"], "request": ["opt_out"], "ts": pa.array([float(seconds)], pa.float64())}),
    )

    result = _ingest(tmp_path, scrubber, items=items, events=events, privacy_requests=requests)

    got = lake.read_table(tmp_path / "lake", "events")
    assert got["ts"].tolist() == [pd.Timestamp("2026-01-20T10:00:00Z"), pd.Timestamp("2026-01-20T10:01:00Z")]
    assert lake.read_table(tmp_path / "lake", "privacy_requests")["ts"].tolist() == [
        pd.Timestamp("2026-01-20T10:00:00Z")
    ]
    assert result.accepted["events"] == 2


def test_wrong_types_infinities_huge_and_broken_strings_are_quarantined_with_a_reason(tmp_path, scrubber):
    n = 6
    items = _parquet(
        tmp_path / "items.parquet",
        pa.table(
            {
                "item_id": [f"i{k}" for k in range(n)],
                "title": ["ok", "Lamp", "x" * 1_000_000, "Desk", "Chair", "Sofa"],
                "description": pa.array([b"fine"] * n, pa.binary()),  # bytes where text belongs: every row
                "brand": ["A"] * n,
                "category": ["C"] * n,
                "price": [1.0, float("inf"), 2.0, 3.0, 4.0, 5.0],
            }
        ),
    )
    items["description"] = [None, None, None, b"bytes", None, None]
    items.loc[4, "brand"] = True  # a bool cell
    # a lone surrogate cannot be written as UTF-8; JSON carries it as an escape, and json.loads gives it back
    lone = json.loads(json.dumps({"t": "Rug \ud800"}))["t"]
    items.loc[5, "title"] = lone
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["s1", "s1", "s1"],
            "item_id": ["i0"] * 3,
            "event_type": ["click"] * 3,
            "query": [None] * 3,
            "ts": [True, float("inf"), "2026-01-20T10:00:00Z"],
        }
    )

    result = _ingest(tmp_path, scrubber, items=items, events=events)

    quarantine = _quarantine(result).set_index("row_number")
    reasons = dict(zip(quarantine["table"] + ":" + quarantine.index, quarantine["reason"], strict=True))
    assert reasons == {
        "items:1": "price is not finite",
        "items:2": f"title is longer than {schema.MAX_CHARS} characters (1000000)",
        "items:3": "description is not text (bytes)",
        "items:4": "brand is not text (bool)",
        "items:5": "title is not valid Unicode (lone surrogate)",
        "events:0": "ts is not a timestamp",
        "events:1": "ts is not a timestamp",
    }
    assert len(quarantine.loc["2"].loc["title"]) < schema.MAX_CHARS + 100  # cut, and its reason says how long
    assert quarantine.loc["5"].loc["title"] == "Rug ?"
    assert lake.read_table(tmp_path / "lake", "items")["item_id"].tolist() == ["i0"]
    assert result.accepted["events"] == 1
