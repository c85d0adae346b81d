"""The whole chain in the prod profile: MLflow on PostgreSQL, Feast's registry on PostgreSQL, online store on Redis.

Every claim is checked where the data lives: the tables of the two databases and the keys in Redis, not
only through the libraries that wrote them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _rows(dsn: str, query: str, *args) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


def test_the_chain_runs_on_postgresql_and_redis(prod_env, redis_space, lenient_policy):
    from ml.cli import run_chain
    from ml.config import RunConfig, Settings
    from ml.features.build import decode_history
    from ml.serving.history import HistoryReader

    settings = Settings.from_env()
    assert settings.profile == "prod" and settings.feast_project == redis_space.project
    config = RunConfig(
        source="synthetic",
        n_users=400,
        n_items=200,
        epochs=1,
        max_steps=6,
        batch_size=64,
        slice_reports=False,
        policy=lenient_policy,
    )
    summary = run_chain(settings, config, echo=lambda *a, **k: None)

    assert summary["gate"]["status"] == "passed"
    version = str(summary["model_version"])
    assert summary["promotion"]["champion"] in (version, int(version))

    # MLflow: the run, the model version and the champion alias are rows in PostgreSQL
    mlflow_dsn = prod_env["MLFLOW_TRACKING_URI"]
    assert _rows(mlflow_dsn, "SELECT count(*) FROM runs")[0][0] >= 1
    assert (settings.model_name, int(version)) in _rows(mlflow_dsn, "SELECT name, version FROM model_versions")
    aliases = dict(
        _rows(mlflow_dsn, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", settings.model_name)
    )
    assert aliases["champion"] == int(version)
    tags = dict(
        _rows(
            mlflow_dsn,
            "SELECT key, value FROM model_version_tags WHERE name = %s AND version = %s",
            settings.model_name,
            int(version),
        )
    )
    assert tags["gate.status"] == "passed" and tags["privacy.dp"] == "true"

    # Feast: the registry's tables are in PostgreSQL, under this test's project
    feast_dsn = prod_env["VETTED_POSTGRES_DSN"]
    views = {
        r[0]
        for r in _rows(
            feast_dsn, "SELECT feature_view_name FROM feature_views WHERE project_id = %s", settings.feast_project
        )
    }
    assert {"user_recent_items", "user_activity", "item_features"} <= views
    # ...and nothing fell back to the local profile's SQLite files
    assert not (settings.feast_dir / "online.db").exists() and not (settings.feast_dir / "registry.db").exists()
    assert not (settings.home / "mlflow.db").exists()

    # Redis: one hash per shopper and per item materialized, all suffixed with the project
    users = pd.read_parquet(settings.home / "features" / "user_events.parquet")
    items = pd.read_parquet(settings.home / "features" / "items.parquet")
    assert len(redis_space.keys()) == users["user_id"].nunique() + items["item_id"].nunique()

    # serving's reader gets a shopper's newest history back from Redis
    newest = users.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")["recent_items"]
    shopper = newest.index[0]
    reader = HistoryReader.open(settings)
    assert reader.recent_items(shopper) == decode_history(newest[shopper]) != []
    assert reader.last_error is None

    # proof that the read came from Redis: without the keys the same shopper has no history
    client = redis_space.client()
    for key in redis_space.keys():
        client.delete(key)
    assert reader.recent_items(shopper) == []

    run_dir = Path(summary["run_dir"])
    assert run_dir.is_relative_to(settings.home)
