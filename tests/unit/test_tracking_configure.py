"""Pointing MLflow at one home leaves the environment as it was, so a second home in the same process gets its
own tracking store (MLflow's setters export MLFLOW_TRACKING_URI, which `Settings.from_env` reads)."""

from __future__ import annotations

import mlflow

from ml.config import Settings
from ml.registry.tracking import configure


def test_a_second_home_in_the_same_process_logs_into_its_own_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("VETTED_HOME", str(tmp_path / "a"))
    first = Settings.from_env()
    configure(first)
    assert mlflow.get_tracking_uri() == first.tracking_uri == mlflow.get_registry_uri()
    monkeypatch.setenv("VETTED_HOME", str(tmp_path / "b"))
    second = Settings.from_env()
    assert second.tracking_uri != first.tracking_uri and str(tmp_path / "b") in second.tracking_uri
    configure(second)
    assert mlflow.get_tracking_uri() == second.tracking_uri
    assert mlflow.get_experiment_by_name(second.experiment).artifact_location == second.artifact_root


def test_a_tracking_uri_set_in_the_environment_stays_and_wins(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VETTED_HOME", str(tmp_path / "a"))
    configure(Settings.from_env())
    monkeypatch.setenv("VETTED_HOME", str(tmp_path / "b"))
    assert Settings.from_env().tracking_uri == uri
