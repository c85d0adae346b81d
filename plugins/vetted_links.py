"""Airflow plugin: from a DAG run's gate and register tasks to the evidence in MLflow.

Extra links ("MLflow model version", "Model card & reports") on the tasks of `recsys_training` from
registration on: the run's `prepare` task returned the run folder through XCom, and the folder's
register.json / train.json name the version and the MLflow run. Global links are resolved by the API
server when the UI asks for them, so a link appears as soon as the version exists. The MLflow UI's address comes
from VETTED_MLFLOW_UI (default http://127.0.0.1:5000, what `make mlflow` serves); each link is that address plus
the UI's own fragment (the card's: ml.registry.card), opened on its model-training view (ML_VIEW).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

LINKED_TASKS = {
    "register",
    "gate",
    "promote",
    "keep_champion",
    "review",
    "record_approval",
    "record_rejection",
    "promote_approved",
}


def _mlflow_ui() -> str:
    return os.environ.get("VETTED_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def version_link(ui: str, model: str, version: str) -> str:
    """The model version's page (its card is the description) in the MLflow UI at `ui`."""
    from ml.registry.card import ML_VIEW

    return f"{ui}/#/models/{quote(model, safe='')}/versions/{quote(str(version), safe='')}?{ML_VIEW}"


def reports_link(ui: str, experiment_id: str, run_id: str) -> str:
    """The run's `reports/` artifact folder (drift, ranking, fairness and per-group reports) in the MLflow UI."""
    from ml.registry.card import ML_VIEW, artifact_page

    return f"{ui}/{artifact_page(experiment_id, run_id, 'reports')}?{ML_VIEW}"


def _run_folder(ti_key) -> Path | None:
    """The run folder, which the DAG run's `prepare` task returned.

    Links are resolved in the API server, which reads the XCom table; the gate's own return value is the
    branch it chose, so every linked task looks at `prepare`'s.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    try:
        with create_session() as session:
            row = session.scalars(
                XComModel.get_many(
                    run_id=ti_key.run_id, key="return_value", task_ids="prepare", dag_ids=ti_key.dag_id, limit=1
                )
            ).first()
            value = XComModel.deserialize_value(row) if row is not None else None
    except Exception:  # no metadata database here, or the XCom was cleared: no link rather than an error
        return None
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
        return version_link(_mlflow_ui(), model, version) if version else ""


class ReportsLink(BaseOperatorLink):
    name = "Model card & reports"

    def get_link(self, operator, *, ti_key) -> str:
        if operator.task_id not in LINKED_TASKS or (folder := _run_folder(ti_key)) is None:
            return ""
        train = _read(folder, "train")
        if not train.get("mlflow_run_id"):
            return ""
        return reports_link(_mlflow_ui(), str(train["experiment_id"]), train["mlflow_run_id"])


class VettedLinksPlugin(AirflowPlugin):
    name = "vetted_links"
    global_operator_extra_links = [ModelVersionLink(), ReportsLink()]
