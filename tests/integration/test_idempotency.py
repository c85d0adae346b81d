"""Re-running a date changes nothing; ingestion is incremental by the run's logical date; backfills work.

Synthetic events span 2026-01-05 .. 2026-03-30 (hold-out from about 2026-03-17), so a run dated after
that takes every event and a run dated inside it takes only the events known by the end of its date.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ml.config import RunConfig, Settings
from ml.data import lake
from ml.data.ingest import read_lake
from ml.data.sources import read_source
from ml.keys import load_pseudonym_key
from ml.pipeline import stages
from ml.pipeline.context import RunContext
from ml.privacy.pseudonymize import Pseudonymizer
from ml.serving.optouts import OptOutList

ROOT = Path(__file__).resolve().parents[2]
SMALL = RunConfig(n_users=400, n_items=200, epochs=1, max_steps=6, batch_size=64, slice_reports=False)
CURRENT, BACKFILL = "2026-06-01", "2026-03-24"


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _feature_frames(ctx: RunContext) -> dict[str, pd.DataFrame]:
    features = ctx.settings.home / "features"
    frames = {
        name: pd.read_parquet(ctx.path(name))
        for name in (stages.TRAIN_SET, stages.CASES, stages.SEQUENCES, stages.SEARCH_CASES)
    }
    frames.update({p.name: pd.read_parquet(p) for p in sorted(features.glob("*.parquet"))})
    return frames


def _run(settings: Settings, name: str, ingest_date: str, features: bool = True) -> RunContext:
    ctx = RunContext.create(settings, replace(SMALL, ingest_date=ingest_date), name=name)
    stages.ingest(ctx)
    if features:
        stages.features(ctx)
    return ctx


def test_rerunning_a_date_rewrites_identical_lake_partitions_and_feature_rows(vetted_home):
    settings = Settings.from_env()
    first = _run(settings, "first", CURRENT)
    lake_before = _digests(settings.lake_dir)
    n_events = len(read_lake(settings.lake_dir)["events"])
    frames_before = _feature_frames(first)
    ingested = first.read("ingest")
    assert ingested["quarantined"]["events"] > 0 and ingested["deleted_users"] > 0  # every branch is exercised

    second = _run(settings, "second", CURRENT)

    assert _digests(settings.lake_dir) == lake_before  # same files, byte for byte, and no new ones
    for table in ("items", "users", "events", "privacy_requests", lake.QUARANTINE):
        assert [lake.partition_date(p) for p in lake.partitions(settings.lake_dir, table)] == [CURRENT]
    events = read_lake(settings.lake_dir)["events"]
    assert events["event_id"].is_unique and len(events) == n_events  # nothing appended twice
    assert second.read("ingest")["accepted"] == ingested["accepted"]
    frames_after = _feature_frames(second)
    assert frames_after.keys() == frames_before.keys()
    assert {"items.parquet", "user_events.parquet"} <= frames_after.keys()
    for name, frame in frames_before.items():
        pd.testing.assert_frame_equal(frames_after[name], frame, obj=name)
    assert {k: v for k, v in second.read("features").items() if k != "feature_files"} == {
        k: v for k, v in first.read("features").items() if k != "feature_files"
    }


def test_rerunning_a_date_with_fewer_or_other_privacy_requests_loses_none(vetted_home):
    import os

    settings = Settings.from_env()
    raw = read_source("synthetic", None, n_users=SMALL.n_users, n_items=SMALL.n_items, seed=SMALL.seed)
    requests = raw.privacy_requests
    assert set(requests["request"]) == {"opt_out", "delete"}
    ctx = RunContext.create(settings, replace(SMALL, ingest_date=CURRENT), name="full")
    stages.ingest(ctx, raw=raw)
    pseudonym = Pseudonymizer(load_pseudonym_key(os.environ, settings.home, allow_demo_key=True)).pseudonym
    received = {pseudonym(u) for u in requests["user_id"]}

    # the same date again, from a source that lost most requests and carries one new one
    requested = set(requests["user_id"])
    newcomer = next(u for u in raw.events["user_id"] if u not in requested)
    late = pd.DataFrame({"user_id": [newcomer], "request": ["opt_out"], "ts": ["2026-01-01T00:00:00Z"]})
    raw.privacy_requests = pd.concat([requests.iloc[:2], late], ignore_index=True)
    for name in ("fewer", "fewer-again"):  # twice: the second run reads the lake the first one wrote
        stages.ingest(RunContext.create(settings, replace(SMALL, ingest_date=CURRENT), name=name), raw=raw)

    ledger = read_lake(settings.lake_dir)["privacy_requests"]
    assert received | {pseudonym(newcomer)} <= set(ledger["user_id"])
    optouts = OptOutList(settings.lake_dir)  # what serving reads: every shopper who ever asked is in it
    assert optouts.loaded and all(p in optouts for p in received | {pseudonym(newcomer)})
    tables = read_lake(settings.lake_dir)
    for kind, group in requests.groupby("request"):
        for user, ts in zip(group["user_id"], pd.to_datetime(group["ts"], utc=True), strict=True):
            mine = tables["events"][tables["events"]["user_id"] == pseudonym(user)]
            if kind == "delete":
                assert mine.empty and pseudonym(user) not in set(tables["users"]["user_id"])
            else:
                assert (mine["ts"] < ts).all(), "an opted-out shopper's later events came back"
    assert tables["events"][tables["events"]["user_id"] == pseudonym(newcomer)].empty  # opted out before any

    # identical data once more: the same bytes
    before = _digests(settings.lake_dir)
    stages.ingest(RunContext.create(settings, replace(SMALL, ingest_date=CURRENT), name="same"), raw=raw)
    assert _digests(settings.lake_dir) == before


def test_a_backfill_writes_only_its_own_date_with_the_events_known_then(vetted_home):
    settings = Settings.from_env()
    current = _run(settings, "current", CURRENT)
    before = _digests(settings.lake_dir)
    events_before = read_lake(settings.lake_dir)["events"].sort_values("event_id").reset_index(drop=True)

    backfill = _run(settings, "backfill", BACKFILL)

    after = _digests(settings.lake_dir)
    assert {k: v for k, v in after.items() if f"ingest_date={BACKFILL}" not in k} == before  # others untouched
    assert any(f"events/ingest_date={BACKFILL}/" in k for k in after)
    got = backfill.read("ingest")
    assert got["known_until"] == "2026-03-25T00:00:00+00:00"
    assert got["deferred"]["events"] > 0 and current.read("ingest")["deferred"]["events"] == 0
    for table, read in got["read"].items():
        assert got["accepted"][table] + got["quarantined"][table] + got["deferred"][table] == read, table
    # the backfilled partition is exactly the events the current one holds from before the cutoff
    old = pd.read_parquet(lake.partition_path(settings.lake_dir, "events", BACKFILL))
    new = pd.read_parquet(lake.partition_path(settings.lake_dir, "events", CURRENT))
    known = new[new["ts"] < pd.Timestamp(got["known_until"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, known)
    assert 0 < len(old) < len(new)
    # reading the lake now: the newest partition still wins per key, so nothing changed
    events_after = read_lake(settings.lake_dir)["events"].sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(events_after, events_before)
    # the backfilled run saw the lake as it stood on its date: no later event reached its features
    assert read_lake(settings.lake_dir, as_of=BACKFILL)["events"]["ts"].max() < pd.Timestamp(got["known_until"])
    for name in (stages.TRAIN_SET, stages.CASES):
        assert pd.to_datetime(pd.read_parquet(backfill.path(name))["ts"], utc=True).max() < pd.Timestamp(
            got["known_until"]
        )
    assert backfill.read("features")["n_cases_in_holdout"] < current.read("features")["n_cases_in_holdout"]


def test_a_date_before_any_hold_out_event_says_so_instead_of_training_on_nothing(vetted_home):
    settings = Settings.from_env()
    ctx = _run(settings, "early", "2026-02-01", features=False)
    assert ctx.read("ingest")["deferred"]["events"] > 0
    with pytest.raises(ValueError, match="no hold-out cases"):
        stages.features(ctx)


def test_a_malformed_ingest_date_is_refused_before_anything_is_written(vetted_home):
    settings = Settings.from_env()
    ctx = RunContext.create(settings, replace(SMALL, ingest_date="2026-13-01"), name="bad")
    with pytest.raises(ValueError, match="not a YYYY-MM-DD date"):
        stages.ingest(ctx)
    assert not settings.lake_dir.exists() or not any(settings.lake_dir.rglob("*.parquet"))
    with pytest.raises(ValueError, match="not a YYYY-MM-DD date"):
        lake.partition_path(settings.lake_dir, "events", "../../etc")


@pytest.fixture
def recsys_dag():
    sys.path.insert(0, str(ROOT / "dags"))
    try:
        import recsys_training

        yield recsys_training
    finally:
        sys.path.remove(str(ROOT / "dags"))


def test_the_dag_fixes_the_ingest_date_from_its_logical_date_once_in_prepare(vetted_home, recsys_dag):
    prepare = recsys_dag.dag_object.get_task("prepare").python_callable
    params = {"n_users": 400, "n_items": 200}
    scheduled = prepare(
        params=params,
        run_id="scheduled__2026-03-23T03:00:00+00:00",
        logical_date=datetime(2026, 3, 23, 3, 0, tzinfo=UTC),
        dag_run=SimpleNamespace(run_after=datetime(2026, 11, 22, 9, 0, tzinfo=UTC)),
    )
    assert RunContext.load(scheduled).config.ingest_date == "2026-03-23"  # a backfill's own date, not today
    # an asset-triggered run has no logical date: the day it was queued is its date, fixed for every retry
    triggered = prepare(
        params=params,
        run_id="asset_triggered__2026-11-22T09:00:00+00:00",
        logical_date=None,
        dag_run=SimpleNamespace(run_after=datetime(2026, 11, 22, 9, 0, tzinfo=UTC)),
    )
    assert RunContext.load(triggered).config.ingest_date == "2026-11-22"
    assert Path(scheduled).parent == Settings.from_env().runs_dir
