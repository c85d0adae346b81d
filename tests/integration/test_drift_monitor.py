"""The drift monitor: stable data stays quiet, a shifted new window is flagged (which triggers retraining)."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.data import lake
from ml.data.schema import validate
from ml.data.synthetic import generate
from ml.pipeline.monitor import check_drift, drift_threshold
from ml.registry import registration as reg
from ml.registry.tracking import configure

ROOT = Path(__file__).resolve().parents[2]


def _setup(tmp_path):
    settings = Settings.from_env()
    raw = generate(n_users=2000, n_items=300, seed=5, bad_rows=False)
    items, _ = validate("items", raw.items)
    events, _ = validate("events", raw.events, known_items=set(items["item_id"]))
    lake.write_partition(settings.lake_dir, "items", "2026-03-01", items)
    lake.write_partition(settings.lake_dir, "events", "2026-03-01", events)
    configure(settings)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    source = tmp_path / "m"
    source.mkdir()
    window = f"{events['ts'].min()} .. {raw.split_time}"
    mv = reg.register(
        client, settings.model_name, str(source), None, {"gate.status": "passed", "data.window": window}, "card"
    )
    reg.promote(client, settings.model_name, str(mv.version))
    return settings, items, events


def test_threshold_comes_from_the_policy():
    assert drift_threshold(None) == 0.5


def test_no_champion_means_nothing_to_compare(vetted_home):
    assert check_drift(Settings.from_env())["status"] == "no_champion"


def test_stable_then_a_shifted_window_is_flagged(vetted_home, tmp_path):
    settings, items, events = _setup(tmp_path)
    stable = check_drift(settings, window_days=7)
    assert stable["status"] == "stable" and not stable["drifted"]

    lake.write_partition(settings.lake_dir, "events", "2026-03-20", _shifted_week(items, events))
    drifted = check_drift(settings, window_days=3)
    assert drifted["drifted"] and drifted["share"] > 0.5
    assert drifted["report"].endswith(".html")


def _shifted_week(items: pd.DataFrame, events: pd.DataFrame, n: int = 400) -> pd.DataFrame:
    """A new week where shoppers only buy, at night, the priciest item."""
    last = events["ts"].max()
    pricey = items.sort_values("price").iloc[-1]["item_id"]
    return pd.DataFrame(
        {
            "event_id": [f"x{i}" for i in range(n)],
            "user_id": events["user_id"].iloc[:n].to_numpy(),
            "item_id": [pricey] * n,
            "event_type": ["purchase"] * n,
            "query": [None] * n,
            "ts": [last + pd.Timedelta(days=1, hours=3, minutes=i % 50) for i in range(n)],
        }
    )


@pytest.mark.slow
def test_drift_in_a_new_window_queues_a_retraining_run_on_its_own(vetted_home, tmp_path, airflow_db):
    """drift_monitor run by Airflow: a stable day queues nothing, a drifted one queues recsys_training."""
    import sys

    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import func, select, update

    sys.path.insert(0, str(ROOT / "dags"))
    import drift_monitor

    def queued() -> tuple[int, list[str]]:
        with create_session() as session:
            drift = session.scalar(select(AssetModel).where(AssetModel.name == "vetted://drift"))
            if drift is None:
                return 0, []
            events = session.scalar(select(func.count()).select_from(AssetEvent).where(AssetEvent.asset_id == drift.id))
            dags = session.scalars(
                select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == drift.id)
            ).all()
            return events, list(dags)

    settings, items, events = _setup(tmp_path)
    before = queued()
    run = drift_monitor.dag_object.test(run_conf={"window_days": 7})
    assert run.state == DagRunState.SUCCESS
    assert queued() == before  # stable: no asset event, no retraining

    with create_session() as session:  # the retraining DAG is switched on, as in production
        session.execute(update(DagModel).where(DagModel.dag_id == "recsys_training").values(is_paused=False))
    lake.write_partition(settings.lake_dir, "events", "2026-03-20", _shifted_week(items, events))
    run = drift_monitor.dag_object.test(run_conf={"window_days": 3})
    assert run.state == DagRunState.SUCCESS
    n_events, dags = queued()
    assert n_events == before[0] + 1
    assert "recsys_training" in dags  # the scheduler turns this queue entry into a recsys_training run
