"""The Feast store of a Vetted home: configuration per profile, apply, materialize, reads.

Local profile: SQLite online store and registry under `<home>/feast`, parquet offline store.
Prod profile: Redis online store (`VETTED_REDIS_URL`), the registry on PostgreSQL (`VETTED_POSTGRES_DSN`,
Feast's `sql` registry), the parquet offline store on the home (a volume every worker shares).

Feast and pandas are imported inside the functions that need them, so that importing this module stays cheap.
The prod URLs are parsed by ml.store_urls, which `Settings` also uses to check them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ml.errors import ConfigError
from ml.store_urls import redis_connection_string, sql_registry_url

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, RepoConfig

    from ml.config import Settings

log = logging.getLogger(__name__)


def repo_config(
    feast_dir: Path, profile: str = "local", project: str = "vetted", redis_url: str = "", postgres_dsn: str = ""
) -> RepoConfig:
    from feast import RepoConfig

    feast_dir.mkdir(parents=True, exist_ok=True)
    registry: dict[str, object] | str
    if profile == "prod":
        if not redis_url or not postgres_dsn:
            raise ConfigError("the prod profile needs VETTED_REDIS_URL and VETTED_POSTGRES_DSN for Feast")
        online = {"type": "redis", "connection_string": redis_connection_string(redis_url)}
        registry = {
            "registry_type": "sql",
            "path": sql_registry_url(postgres_dsn),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online.db")}
        registry = str(feast_dir / "registry.db")
    # the online store keeps one row per entity: materializing only the newest values is the same result
    # for a fraction of the writes (every shopper has one row per interaction offline)
    return RepoConfig(
        project=project,
        provider="local",
        registry=registry,
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=feast_dir,
        materialization={"pull_latest_features": True},
    )


def repo_config_for(settings: Settings) -> RepoConfig:
    """The Feast configuration of a home's profile and project."""
    return repo_config(
        settings.feast_dir,
        settings.profile,
        project=settings.feast_project,
        redis_url=settings.redis_url,
        postgres_dsn=settings.postgres_dsn,
    )


def open_store(config: RepoConfig) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(config=config)


def apply_definitions(store: FeatureStore, data_dir: Path) -> list[str]:
    """`feast apply` in code: register every entity, view and service; returns their names."""
    from feature_repo.definitions import build

    objects = build(data_dir)
    store.apply(list(objects.values()))
    return sorted(objects)


def materialize(store: FeatureStore, end: datetime) -> None:
    """Load the newest feature values up to `end` into the online store (incremental after the first)."""
    store.materialize_incremental(end_date=end)


def historical_features(store: FeatureStore, entity_df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Point-in-time join: each row gets the feature values as they were at its `event_timestamp`."""
    return store.get_historical_features(entity_df=entity_df, features=features).to_df()


def rebuild_online(store: FeatureStore, data_dir: Path, end: datetime) -> None:
    """Drop and refill this project's online rows from the feature files (after deletions: nothing stale survives).

    Only the online store is cleared. `FeatureStore.teardown()` would also delete every project in the
    registry, and in prod the registry is a PostgreSQL database that other projects may share.
    """
    apply_definitions(store, data_dir)
    views, entities = store.list_feature_views(), store.list_entities()
    provider = store._get_provider()  # Feast has no public "clear the online store" call
    provider.teardown_infra(store.project, views, entities)
    # recreate what teardown dropped (the SQLite tables; Redis keeps no schema)
    provider.update_infra(
        store.project,
        tables_to_delete=[],
        tables_to_keep=views,
        entities_to_delete=[],
        entities_to_keep=entities,
        partial=False,
    )
    store.materialize(start_date=datetime(1970, 1, 2, tzinfo=end.tzinfo), end_date=end)
