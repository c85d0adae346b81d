"""The Feast store of a Vetted home: configuration per profile, apply, materialize, reads.

Local profile: SQLite online store and registry under `<home>/feast`, parquet offline store.
Prod profile: Redis online store (`VETTED_REDIS_URL`), the registry on PostgreSQL (`VETTED_POSTGRES_DSN`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pandas as pd
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import build

log = logging.getLogger(__name__)


def repo_config(feast_dir: Path, profile: str = "local", project: str = "vetted", redis_url: str = "",
                postgres_dsn: str = "") -> RepoConfig:
    feast_dir.mkdir(parents=True, exist_ok=True)
    if profile == "prod":
        if not redis_url or not postgres_dsn:
            raise ValueError("the prod profile needs VETTED_REDIS_URL and VETTED_POSTGRES_DSN for Feast")
        host = redis_url.removeprefix("redis://").rstrip("/")
        host, _, db = host.partition("/")
        online = {"type": "redis", "connection_string": f"{host},db={db or 0}"}
        registry = {"registry_type": "sql", "path": postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1),
                    "cache_ttl_seconds": 60}
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online.db")}
        registry = str(feast_dir / "registry.db")
    # the online store keeps one row per entity: materializing only the newest values is the same result
    # for a fraction of the writes (every shopper has one row per interaction offline)
    return RepoConfig(project=project, provider="local", registry=registry, online_store=online,
                      offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=feast_dir,
                      materialization={"pull_latest_features": True})


def open_store(config: RepoConfig) -> FeatureStore:
    return FeatureStore(config=config)


def apply_definitions(store: FeatureStore, data_dir: Path) -> list[str]:
    """`feast apply` in code: register every entity, view and service; returns their names."""
    objects = build(data_dir)
    store.apply(list(objects.values()))
    return sorted(objects)


def materialize(store: FeatureStore, end: datetime) -> None:
    """Load the newest feature values up to `end` into the online store (incremental after the first)."""
    store.materialize_incremental(end_date=end)


def historical_features(store: FeatureStore, entity_df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Point-in-time join: each row gets the feature values as they were at its `event_timestamp`."""
    return store.get_historical_features(entity_df=entity_df, features=features).to_df()


def online_features(store: FeatureStore, user_ids: list[str], features: list[str]) -> dict[str, list]:
    return store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in user_ids]).to_dict()


def rebuild_online(store: FeatureStore, data_dir: Path, end: datetime) -> None:
    """Drop and refill the online store from the feature files (after deletions: nothing stale survives)."""
    store.teardown()
    apply_definitions(store, data_dir)
    store.materialize(start_date=datetime(1970, 1, 2, tzinfo=end.tzinfo), end_date=end)
