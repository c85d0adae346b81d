"""MLflow tracking: the store, the experiment (with an explicit artifact location), runs.

A training attempt's run carries its run folder as a tag from the moment it is created
(`start_attempt`), so a retry can find what a killed attempt left RUNNING and end it as KILLED:
the tracking store never shows a dead attempt as still running, and only the retry's run is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from ml.config import Settings

log = logging.getLogger(__name__)

RUN_DIR_TAG = "vetted.run_dir"
# The experiment's kind, as the MLflow UI reads it: "custom_model_development" is a model-training experiment
# (runs, metrics, the registry), not a GenAI app (traces, the GenAI overview). MLflow 3.17's UI, with its
# workflow navigation on (as built), takes the view from its workflow switch instead (kept per browser, GenAI
# unless chosen), which the `workflowType=machine_learning` query (ml.registry.card.ML_VIEW) on the links into
# the UI sets (plugins/vetted_links.py); the tag is what its experiment page reads with that navigation off.
EXPERIMENT_KIND_TAG, ML_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"


# what MLflow's set_tracking_uri / set_registry_uri also write into the process environment
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def configure(settings: Settings) -> str:
    """Point MLflow at this home's tracking store; create the experiment if needed (tagged as a model-training
    experiment, and an experiment made before that tag existed gets it); return its id.

    MLflow's setters also export the URI as MLFLOW_TRACKING_URI (and MLFLOW_REGISTRY_URI) in the process
    environment, where `Settings.from_env` would read it back: a later home in the same process (a benchmark's
    next run, a test's next fixture) would then log into this one's store. The environment is put back as it was;
    MLflow keeps the URIs in the process all the same."""
    before = {name: os.environ.get(name) for name in _URI_VARIABLES}
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            settings.experiment, artifact_location=settings.artifact_root, tags={EXPERIMENT_KIND_TAG: ML_EXPERIMENT}
        )
        log.info("created MLflow experiment %s (artifacts in %s)", settings.experiment, settings.artifact_root)
        return experiment_id
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != ML_EXPERIMENT:
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT)
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


def end_abandoned_attempts(experiment_id: str, run_dir: str) -> list[str]:
    """Mark KILLED every run of this run folder still RUNNING (an attempt that died); return their ids."""
    tracking = MlflowClient()
    ended = []
    running = tracking.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        if run.data.tags.get(RUN_DIR_TAG) == run_dir:
            tracking.set_tag(run.info.run_id, "vetted.attempt", "abandoned: the task died; a retry replaced it")
            tracking.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
            ended.append(run.info.run_id)
    if ended:
        log.warning("ended %d abandoned attempt(s) of %s as KILLED: %s", len(ended), run_dir, ended)
    return ended


@contextmanager
def start_attempt(experiment_id: str, run_name: str, run_dir: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """A fresh training run for `run_dir`, tagged with it from creation, after ending dead attempts."""
    end_abandoned_attempts(experiment_id, run_dir)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**tags, RUN_DIR_TAG: run_dir}) as run:
        yield run
