"""The `sql` source on this machine's PostgreSQL: the same checks as on SQLite (tests/unit/test_sql_source.py),
with a timestamptz column, a schema of the shop's own, and the server-side cursor reading in chunks."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from ml.data import shop
from ml.data.sources import read_source
from tests.unit.test_sql_source import EVENTS, check_shop, write_shop

pytestmark = pytest.mark.services


def test_tables_in_postgres(postgres_db):
    url = write_shop(postgres_db("sqlsource"))
    with sa.create_engine(url).connect() as conn:  # pandas writes a zoned time as timestamptz
        kind = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'ts'"
            )
        ).scalar()
    assert kind == "timestamp with time zone"
    check_shop(url)


def test_a_schema_of_its_own_and_naive_times_in_chunks(postgres_db, tmp_path):
    url = postgres_db("sqlschema")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA shop"))
    engine.dispose()
    naive = EVENTS.assign(ts=EVENTS["ts"].dt.tz_localize(None))  # timestamp without time zone, holding UTC
    write_shop(url, naive)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("items", "events", "users"):
            conn.execute(sa.text(f"ALTER TABLE {table} SET SCHEMA shop"))
    engine.dispose()
    options = tmp_path / "o.yaml"
    options.write_text("schema: shop\nchunk_rows: 3\n")
    seen = []
    original = shop.contract_chunk
    try:
        shop.contract_chunk = lambda table, chunk, opts: (
            seen.append((table, len(chunk))) or original(table, chunk, opts)
        )
        check_shop(url, str(options))
    finally:
        shop.contract_chunk = original
    assert max(n for t, n in seen if t == "events") == 3
    raw = read_source("sql", str(options), url=url, ingest_date="2026-01-05")
    assert pd.to_datetime(raw.events["ts"], utc=True).max() == pd.Timestamp("2026-01-05", tz="UTC")
