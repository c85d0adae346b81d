"""Airflow plugin: from a DAG run's gate and register tasks to the evidence in MLflow.

Extra links ("MLflow model version", "Model card & reports") on the tasks of `recsys_training` that know
a run folder: the register, gate, promote and keep_champion tasks return it through XCom, and the run
folder's register.json / train.json name the version and the MLflow run. The MLflow UI's address comes
from VETTED_MLFLOW_UI (default http://127.0.0.1:5000, what `make mlflow` serves).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

LINKED_TASKS = {"register", "gate", "promote", "keep_champion"}


def _mlflow_ui() -> str:
    return os.environ.get("VETTED_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def _run_folder(ti_key) -> Path | None:
    from airflow.models.xcom import XComModel

    try:
        value = XComModel.get_value(ti_key=ti_key, key="return_value")
    except Exception:  # the task has not run yet, or its XCom was cleared
        return None
    if isinstance(value, dict):
        value = value.get("run_dir")
    return Path(value) if isinstance(value, str) and Path(value).is_dir() else None


def _read(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


class ModelVersionLink(BaseOperatorLink):
    name = "MLflow model version"

    def get_link(self, operator, *, ti_key) -> str:
        if operator.task_id not in LINKED_TASKS or (folder := _run_folder(ti_key)) is None:
            return ""
        version = _read(folder, "register").get("version")
        model = _read(folder, "context").get("settings", {}).get("model_name", "vetted-recsys")
        return f"{_mlflow_ui()}/#/models/{model}/versions/{version}" if version else ""


class ReportsLink(BaseOperatorLink):
    name = "Model card & reports"

    def get_link(self, operator, *, ti_key) -> str:
        if operator.task_id not in LINKED_TASKS or (folder := _run_folder(ti_key)) is None:
            return ""
        train = _read(folder, "train")
        if not train.get("mlflow_run_id"):
            return ""
        return (f"{_mlflow_ui()}/#/experiments/{train['experiment_id']}/runs/{train['mlflow_run_id']}"
                "/artifacts/reports")


class VettedLinksPlugin(AirflowPlugin):
    name = "vetted_links"
    global_operator_extra_links = [ModelVersionLink(), ReportsLink()]
