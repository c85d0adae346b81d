"""Airflow's metadata on PostgreSQL with the CeleryExecutor configured, as the prod profile runs it.

Each command runs in its own process, as on a worker: Airflow reads its configuration once, at import,
and the test session's own Airflow is configured for SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAGS = {"recsys_training", "drift_monitor", "rollback"}


@pytest.fixture
def airflow_env(tmp_path, postgres_db, redis_space) -> dict[str, str]:
    """Airflow on a fresh PostgreSQL database, Celery's broker in the test's spare Redis db."""
    dsn = postgres_db("airflow")
    rest = dsn.split("://", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{rest}",
            # Airflow 3 also opens an async engine; it would pick asyncpg, which is not installed: psycopg 3 is
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg://{rest}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis_space.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{rest}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        }
    )
    env["VETTED_TEST_AIRFLOW_DSN"] = dsn  # for the test's own queries, not read by Airflow
    return env


def airflow(env: dict[str, str], *args: str, timeout: int = 300) -> str:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def json_output(out: str) -> list:
    """The JSON document of `-o json` (Airflow may print warnings on lines before it)."""
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("[")))


def rows(dsn: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_airflow_metadata_lives_on_postgresql_and_our_dags_load(airflow_env):
    dsn = airflow_env["VETTED_TEST_AIRFLOW_DSN"]
    airflow(airflow_env, "db", "migrate")
    assert ("dag",) in rows(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert airflow(airflow_env, "config", "get-value", "core", "executor").strip() == "CeleryExecutor"
    # the executor class loads with this configuration (the Celery provider is installed, the broker URL parses)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.executors.executor_loader import ExecutorLoader;"
            "print(type(ExecutorLoader.get_default_executor()).__name__)",
        ],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, (
        "the CeleryExecutor does not load (celery 5.7 dropped celery.backends.database."
        "retry, which the Celery provider imports: celery<5.7 is needed):\n" + loaded.stderr[-2000:]
    )
    assert loaded.stdout.strip().splitlines()[-1] == "CeleryExecutor"

    airflow(airflow_env, "dags", "reserialize")  # parse the folder into the metadata database, as the processor does
    assert json_output(airflow(airflow_env, "dags", "list-import-errors", "-o", "json")) == []
    listed = {d["dag_id"] for d in json_output(airflow(airflow_env, "dags", "list", "-o", "json"))}
    assert DAGS <= listed
    assert DAGS <= {r[0] for r in rows(dsn, "SELECT dag_id FROM serialized_dag")}
    assert rows(dsn, "SELECT count(*) FROM import_error")[0][0] == 0


@pytest.mark.slow
def test_recsys_training_runs_under_airflow_on_postgresql(airflow_env, prod_env, lenient_policy):
    """`airflow dags test` on the PostgreSQL metadata database, the chain on the prod profile's stores."""
    env = {**airflow_env, **prod_env}
    airflow(env, "db", "migrate")
    conf = {
        "source": "synthetic",
        "n_users": 400,
        "n_items": 200,
        "epochs": 1,
        "max_steps": 6,
        "batch_size": 64,
        "slice_reports": False,
        "policy": lenient_policy,
        "require_approval": False,
    }
    airflow(env, "dags", "test", "recsys_training", "-c", json.dumps(conf), timeout=600)

    dsn = airflow_env["VETTED_TEST_AIRFLOW_DSN"]
    assert rows(dsn, "SELECT state FROM dag_run WHERE dag_id = 'recsys_training'") == [("success",)]
    states = dict(rows(dsn, "SELECT task_id, state FROM task_instance WHERE dag_id = 'recsys_training'"))
    assert {states[t] for t in ("ingest", "features", "train", "evaluate", "register", "gate", "promote")} == {
        "success"
    }
    aliases = rows(prod_env["MLFLOW_TRACKING_URI"], "SELECT alias, version FROM registered_model_aliases")
    assert ("champion", 1) in aliases
