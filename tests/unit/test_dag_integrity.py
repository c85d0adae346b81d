"""Every DAG file imports without error, and recsys_training has the shape the house plan describes."""

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert "recsys_training" in dagbag.dags


def test_recsys_training_wiring(dagbag):
    dag = dagbag.dags["recsys_training"]
    assert {"prepare", "ingest", "features", "train", "evaluate", "register", "gate"} <= set(dag.task_ids)
    gate = dag.get_task("gate")
    assert gate.downstream_task_ids >= {"promote", "keep_champion"}
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    assert {"source", "epochs", "max_steps", "batch_size", "policy", "dp_target_epsilon",
            "dp_transitions_floor"} <= set(dag.params.keys())
    assert dag.get_task("train").queue == "gpu"


def test_approval_path_is_only_reachable_through_the_review(dagbag):
    dag = dagbag.dags["recsys_training"]
    assert dag.get_task("review").upstream_task_ids == {"gate"}
    assert dag.get_task("record_approval").upstream_task_ids >= {"review"}
    assert dag.get_task("record_rejection").upstream_task_ids >= {"review"}
    assert dag.get_task("promote_approved").upstream_task_ids == {"record_approval"}


def test_every_dag_is_there(dagbag):
    assert {"recsys_training", "drift_monitor", "rollback"} <= set(dagbag.dags)


def test_the_trigger_forms_defaults_are_valid_and_make_a_run_config(dagbag):
    """The form submits its own defaults: no required field left empty, every Param described, and the values
    (empty text fields arrive as None) build a RunConfig."""
    from ml.config import RunConfig

    dag = dagbag.dags["recsys_training"]
    values = dag.params.validate()  # raises ParamValidationError on a default the form would refuse
    assert values["path"] is None and values["policy"] is None
    undescribed = [name for name in dag.params if not dag.params.get_param(name).description]
    assert undescribed == []
    config = RunConfig.from_dict(values)
    assert config.path == "" and config.policy == "" and config.source == "synthetic" and config.url == ""


def test_the_forms_sources_are_the_registrys(dagbag):
    from ml.data.sources import REGISTRY

    dag = dagbag.dags["recsys_training"]
    assert dag.params.get_param("source").schema["enum"] == list(REGISTRY)
    assert {"path", "url"} <= set(dag.params.keys())
    from ml.config import RunConfig

    config = RunConfig.from_dict({**dag.params.validate(), "source": "sql", "url": "sqlite:///shop.db"})
    assert config.url == "sqlite:///shop.db"
