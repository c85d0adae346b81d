"""A deletion request reaches everything: lake partitions, Feast (offline and online), training sets."""

import hashlib
from dataclasses import replace

import pandas as pd

from ml.config import RunConfig, Settings
from ml.data.ingest import read_lake
from ml.data.synthetic import generate
from ml.features import store as fs
from ml.keys import load_pseudonym_key
from ml.pipeline import stages
from ml.pipeline.context import RunContext
from ml.privacy.consent import read_deletion_log
from ml.privacy.pseudonymize import Pseudonymizer
from tests.oracles import online_features


def test_a_deleted_shopper_leaves_no_trace(vetted_home):
    import os

    settings = Settings.from_env()
    config = RunConfig(n_users=300, n_items=150, seed=11)
    raw = generate(n_users=300, n_items=150, seed=11, bad_rows=False)
    requested = set(raw.privacy_requests["user_id"])
    active = raw.events["user_id"].value_counts()
    victim = next(u for u in active.index if u not in requested)
    pseudonym = Pseudonymizer(load_pseudonym_key(os.environ, settings.home, allow_demo_key=True)).pseudonym(victim)

    first = RunContext.create(settings, config, name="first")
    stages.ingest(first, raw=raw)
    stages.features(first)
    assert pseudonym in set(read_lake(settings.lake_dir)["events"]["user_id"])
    store = fs.open_store(fs.repo_config(settings.feast_dir))
    assert online_features(store, [pseudonym], ["user_recent_items:recent_items"])["recent_items"][0]

    # the shopper asks for deletion; the next ingestion (another date) applies it everywhere
    delete = pd.DataFrame({"user_id": [victim], "request": ["delete"], "ts": ["2026-04-01T00:00:00Z"]})
    raw.privacy_requests = pd.concat([raw.privacy_requests, delete], ignore_index=True)
    second = RunContext.create(settings, replace(config, ingest_date="2099-01-01"), name="second")
    result = stages.ingest(second, raw=raw)
    stages.features(second)

    lake_tables = read_lake(settings.lake_dir)
    assert pseudonym not in set(lake_tables["events"]["user_id"])
    assert pseudonym not in set(lake_tables["users"]["user_id"])
    for part in (settings.lake_dir / "events").glob("*/part.parquet"):  # every partition, not just the newest
        assert pseudonym not in set(pd.read_parquet(part)["user_id"])
    assert pseudonym not in set(pd.read_parquet(settings.home / "features" / "user_events.parquet")["user_id"])
    for name in (stages.TRAIN_SET, stages.CASES, stages.SEQUENCES, stages.SEARCH_CASES):
        assert pseudonym not in set(pd.read_parquet(second.path(name))["user_id"])
    store = fs.open_store(fs.repo_config(settings.feast_dir))
    assert online_features(store, [pseudonym], ["user_recent_items:recent_items"])["recent_items"][0] is None
    log = read_deletion_log(settings.lake_dir / "deletion_log.jsonl")
    assert hashlib.sha256(pseudonym.encode()).hexdigest() in {r["pseudonym_sha256"] for r in log}
    assert victim not in (settings.lake_dir / "deletion_log.jsonl").read_text()
    assert result["accepted"]["events"] == len(raw.events)  # valid rows: consent, not the contract, removed them
    assert second.read("ingest")["consent"]["events_removed_deleted"] > 0
