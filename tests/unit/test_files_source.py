"""The `files` source: a folder (local or fsspec) of parquet or CSV contract tables, the column map, the split
time, chunked reading, and ingestion's quarantine of what breaks the contract; plus the example folder."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from ml.data import files, schema, shop
from ml.data.ingest import ingest
from ml.data.sources import SourceError, SourceNotFoundError, read_source
from ml.privacy.pii import PIIScrubber
from ml.privacy.pseudonymize import Pseudonymizer
from tests.contract_shop import shop_tables

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shop"

ITEMS, EVENTS = shop_tables()


def shop_folder(folder: Path, fmt: str = "parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("items", ITEMS), ("events", EVENTS)):
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_reads_parquet_and_csv_alike_and_places_the_default_split_at_the_last_tenth(tmp_path):
    for fmt in ("parquet", "csv"):
        raw = read_source("files", shop_folder(tmp_path / fmt, fmt))
        assert raw.name == "files" and raw.counts() == {"items": 3, "users": 3, "events": 10, "privacy_requests": 0}
        # users absent: the shoppers the events name; privacy requests absent: none
        assert sorted(raw.users["user_id"]) == ["u1", "u2", "u3"]
        # the events span 9 days: the hold-out is the last 0.9 of a day
        assert raw.split_time == pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=9) * 0.9
        good, bad = schema.validate("events", raw.events, known_items=set(raw.items["item_id"]))
        assert len(good) == 9 and list(bad["reason"]) == ["item_id not in catalog"]
        items, bad_items = schema.validate("items", raw.items)
        assert len(items) == 3 and bad_items.empty, fmt  # an empty CSV price cell is "no price", not a bad number


def test_the_split_time_is_a_setting_and_the_default_counts_only_events_known_by_the_ingest_date(tmp_path):
    folder = shop_folder(tmp_path / "s")
    until = pd.Timestamp("2026-01-06", tz="UTC")  # events on Jan 1..5 are known
    raw = files.load(str(folder), until=until)
    assert raw.split_time == pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=4) * 0.9
    assert len(raw.events) == 10  # later events are still read: ingestion defers them
    (folder / shop.OPTIONS_FILE).write_text("split_time: 2026-01-08\n")
    assert files.load(str(folder), until=until).split_time == pd.Timestamp("2026-01-08", tz="UTC")


def test_a_column_map_renames_the_shops_columns_and_extra_columns_are_not_read(tmp_path):
    folder = tmp_path / "mapped"
    folder.mkdir()
    ITEMS.rename(columns={"item_id": "sku", "title": "name"}).drop(columns=["brand"]).assign(
        secret="ops@shop.example"
    ).to_csv(folder / "catalogue.csv", index=False)
    EVENTS.rename(columns={"event_id": "id", "ts": "at"}).to_parquet(folder / "events.parquet", index=False)
    (folder / shop.OPTIONS_FILE).write_text(
        "tables: {items: catalogue.csv}\ncolumns:\n  items: {sku: item_id, name: title}\n  events: {id: event_id, at: ts}\n"
    )
    raw = read_source("files", folder)
    assert list(raw.items.columns) == [c.name for c in schema.TABLES["items"]]
    assert raw.items["brand"].isna().all()  # absent and optional: empty
    assert list(raw.items["item_id"]) == ["a", "b", "c"] and list(raw.events["event_id"])[:2] == ["e0", "e1"]


def test_partitioned_folders_are_read_in_chunks_and_csv_numbers_in_ts_are_epoch_seconds(tmp_path):
    folder = tmp_path / "parts"
    shop_folder(folder).joinpath("events.parquet").unlink()
    events = EVENTS.assign(ts=(EVENTS["ts"].astype("int64") // 10**9).astype(str), day=EVENTS["ts"].dt.day)
    for day, part in events.groupby("day"):
        (folder / "events" / f"day={day}").mkdir(parents=True)
        part.drop(columns="day").to_csv(folder / "events" / f"day={day}" / "part.csv", index=False)
    (folder / "events" / "_SUCCESS").write_text("")
    (folder / shop.OPTIONS_FILE).write_text("chunk_rows: 3\n")
    seen = []
    original = shop.contract_chunk
    try:
        shop.contract_chunk = lambda table, chunk, options: (
            seen.append((table, len(chunk))) or original(table, chunk, options)
        )
        raw = read_source("files", folder)
    finally:
        shop.contract_chunk = original
    assert max(n for t, n in seen if t == "events") <= 3 and sum(n for t, n in seen if t == "events") == 10
    good, bad = schema.validate("events", raw.events.sort_values("event_id"))
    assert bad.empty and list(good["ts"]) == list(EVENTS["ts"])
    assert "day" not in raw.events.columns  # a partition column the contract does not name is not read


def test_any_fsspec_url_is_a_folder():
    fs = fsspec.filesystem("memory")
    for name, frame in (("items", ITEMS), ("events", EVENTS)):
        with fs.open(f"/shop-test/{name}.parquet", "wb") as f:
            frame.to_parquet(f, index=False)
    try:
        raw = read_source("files", "memory://shop-test")
    finally:
        fs.rm("/shop-test", recursive=True)
    assert raw.counts()["events"] == 10


def test_errors_say_what_is_missing_and_what_is_expected(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"absent does not exist.*; expected the contract tables"):
        read_source("files", tmp_path / "absent")
    with pytest.raises(SourceError, match="needs a path"):
        read_source("files", None)
    folder = shop_folder(tmp_path / "e")
    (folder / "events.parquet").unlink()
    with pytest.raises(SourceNotFoundError, match=r"no events table .*events\.parquet, events\.csv"):
        read_source("files", folder)
    EVENTS.drop(columns=["event_type"]).to_parquet(folder / "events.parquet", index=False)
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['event_type'\].*columns: \{events: \{your_column"):
        read_source("files", folder)
    EVENTS.to_csv(folder / "events.csv", index=False)
    with pytest.raises(SourceError, match="table events is in several places"):
        read_source("files", folder)
    (folder / "events.csv").unlink()
    for text, message in (
        ("columns: {items: {sku: sku_id}}", r"maps onto \['sku_id'\]"),
        ("colums: {}", r"unknown option\(s\) \['colums'\]"),
        ("queries: {items: SELECT 1}", r"for the sql source only"),
        ("split_time: someday", "is not a date-time"),
        ("chunk_rows: 0", "chunk_rows must be"),
        ("columns: {items: {a: title, b: title}}", r"several columns onto \['title'\]"),
    ):
        (folder / shop.OPTIONS_FILE).write_text(text + "\n")
        with pytest.raises(SourceError, match=message):
            read_source("files", folder)


def test_the_example_folder_ingests_with_its_quarantine(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    raw = read_source("files", EXAMPLE, ingest_date="2026-12-06")
    assert raw.counts()["items"] > 100 and raw.counts()["events"] > 4000
    result = ingest(raw, tmp_path / "lake", Pseudonymizer(b"k" * 32), PIIScrubber(), "2026-12-06")
    for table in result.read:  # accepted + quarantined + deferred == read, as for every source
        assert result.accepted[table] + result.quarantined[table] + result.deferred[table] == result.read[table]
    assert result.quarantined["events"] > 0 and result.quarantined["items"] > 0
    assert "ts is missing" in result.quarantine_reasons  # the one event whose time the shop's log could not hold
    assert not result.dropped_columns  # internal_note and the month partition were never read
