"""The drift monitor: stable data stays quiet, a shifted new window is flagged (which triggers retraining)."""

import pandas as pd
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.data import lake
from ml.data.schema import validate
from ml.data.synthetic import generate
from ml.pipeline.monitor import check_drift, drift_threshold
from ml.registry import registration as reg
from ml.registry.tracking import configure


def _setup(tmp_path):
    settings = Settings.from_env()
    raw = generate(n_users=2000, n_items=300, seed=5, bad_rows=False)
    items, _ = validate("items", raw.items)
    events, _ = validate("events", raw.events, known_items=set(items["item_id"]))
    lake.write_partition(settings.lake_dir, "items", "2026-03-01", items)
    lake.write_partition(settings.lake_dir, "events", "2026-03-01", events)
    configure(settings)
    client = MlflowClient(settings.tracking_uri)
    source = tmp_path / "m"
    source.mkdir()
    window = f"{events['ts'].min()} .. {raw.split_time}"
    mv = reg.register(client, settings.model_name, str(source), None,
                      {"gate.status": "passed", "data.window": window}, "card")
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

    # a new week where shoppers only search, at night, with long queries, for the priciest category
    last = events["ts"].max()
    pricey = items.sort_values("price").iloc[-1]["item_id"]
    n = 400
    shifted = pd.DataFrame({
        "event_id": [f"x{i}" for i in range(n)], "user_id": events["user_id"].iloc[:n].to_numpy(),
        "item_id": [pricey] * n, "event_type": ["purchase"] * n, "query": [None] * n,
        "ts": [last + pd.Timedelta(days=1, hours=3, minutes=i % 50) for i in range(n)],
    })
    lake.write_partition(settings.lake_dir, "events", "2026-03-20", shifted)
    drifted = check_drift(settings, window_days=3)
    assert drifted["drifted"] and drifted["share"] > 0.5
    assert drifted["report"].endswith(".html")
