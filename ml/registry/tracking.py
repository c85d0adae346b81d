"""MLflow tracking: the store, the experiment (with an explicit artifact location), runs."""

from __future__ import annotations

import logging

import mlflow
from mlflow.tracking import MlflowClient

from ml.config import Settings

log = logging.getLogger(__name__)


def configure(settings: Settings) -> str:
    """Point MLflow at this home's tracking store; create the experiment if needed; return its id."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = mlflow.create_experiment(settings.experiment, artifact_location=settings.artifact_root)
        log.info("created MLflow experiment %s (artifacts in %s)", settings.experiment, settings.artifact_root)
        return experiment_id
    return experiment.experiment_id


def client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def flat_params(prefix: str, data: dict) -> dict[str, str]:
    """Nested dicts to MLflow's flat string params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flat_params(name, value))
        else:
            out[name] = str(value)[:500]
    return out
