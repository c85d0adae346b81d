"""The chain's ingest and features stages on a shop's own tables: examples/shop as files and, loaded into SQLite,
through the sql source. The same rows give the same lake and the same training set and hold-out, and the sql
source's read bounded by an earlier ingest date still leaves hold-out cases (the default split time counts only
the events known by then)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml.config import RunConfig, Settings
from ml.data.files import load
from ml.data.ingest import read_lake
from ml.pipeline import stages
from ml.pipeline.context import RunContext

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop"


def _run(home: Path, monkeypatch, config: RunConfig) -> RunContext:
    monkeypatch.setenv("VETTED_HOME", str(home))
    ctx = RunContext.create(Settings.from_env(), config, name="r")
    stages.ingest(ctx)
    stages.features(ctx)
    return ctx


def test_files_and_sql_give_the_same_lake_and_cases(vetted_home, tmp_path, monkeypatch):
    monkeypatch.setenv("VETTED_PSEUDONYM_KEY", "shop-sources-test-key")  # one key: the two lakes' pseudonyms agree
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    raw = load(str(EXAMPLE))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("items", "users", "events", "privacy_requests"):
            getattr(raw, table).to_sql(table, conn, index=False)
    engine.dispose()
    small = RunConfig(max_steps=6, slice_reports=False, ingest_date="2026-12-06")
    by_files = _run(tmp_path / "files", monkeypatch, replace(small, source="files", path=str(EXAMPLE)))
    by_sql = _run(tmp_path / "sql", monkeypatch, replace(small, source="sql", url=url))
    a, b = by_files.read("ingest"), by_sql.read("ingest")
    assert a["quarantined"]["events"] > 0 and a["deleted_users"] > 0  # the example's broken rows and deletion
    for key in ("read", "accepted", "quarantined", "deferred", "quarantine_reasons", "split_time"):
        assert a[key] == b[key], key
    for table, frame in read_lake(tmp_path / "files" / "lake").items():
        pd.testing.assert_frame_equal(read_lake(tmp_path / "sql" / "lake")[table], frame, obj=table)
    assert by_files.read("features")["n_cases"] > 100
    for name in (stages.TRAIN_SET, stages.CASES):
        pd.testing.assert_frame_equal(pd.read_parquet(by_sql.path(name)), pd.read_parquet(by_files.path(name)))

    earlier = _run(tmp_path / "earlier", monkeypatch, replace(small, source="sql", url=url, ingest_date="2026-03-10"))
    ingested = earlier.read("ingest")
    assert ingested["read"]["events"] < a["read"]["events"] and ingested["deferred"]["events"] == 0
    assert pd.Timestamp(ingested["split_time"]) < pd.Timestamp("2026-03-11", tz="UTC")
    assert earlier.read("features")["n_cases"] > 0
