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
    assert {
        "source",
        "epochs",
        "max_steps",
        "batch_size",
        "policy",
        "dp_target_epsilon",
        "dp_transitions_floor",
    } <= set(dag.params.keys())
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


def test_every_param_default_is_valid_json_schema_and_optional_ones_default_to_none(dagbag):
    """Each Param's schema is valid JSON schema and accepts its own default; a Param whose default is empty
    admits null, so the form submits untouched."""
    import jsonschema

    params = dagbag.dags["recsys_training"].params
    for name in params:
        param = params.get_param(name)
        jsonschema.Draft202012Validator.check_schema(param.schema)
        jsonschema.validate(param.value, param.schema)
        if param.value is None:
            assert "null" in param.schema["type"], name


def test_number_limits_are_in_the_text_and_refused_not_clamped(dagbag):
    """The UI's number box clamps to a top-level minimum/maximum on blur, silently; so the limits live in allOf,
    are written in the description, and a value past them fails with a message naming the limit."""
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["recsys_training"].params
    bounded = {}
    for name in params:
        schema = params.get_param(name).schema
        assert "minimum" not in schema and "maximum" not in schema, f"{name}: the form would clamp it"
        for limits in schema.get("allOf", []):
            bounded[name] = limits
    assert {
        "n_users",
        "n_items",
        "epochs",
        "max_steps",
        "batch_size",
        "dp_target_epsilon",
        "dp_delta",
        "dp_transitions_floor",
        "seed",
        "world_size",
    } <= set(bounded)
    for name, limits in bounded.items():
        param = params.get_param(name)
        assert f"{limits['maximum']:,}" in param.description, (name, param.description)
        with pytest.raises(ParamValidationError, match="greater than the maximum"):
            param.resolve(limits["maximum"] * 2 + 1, suppress_exception=False)
        low = limits.get("minimum", limits.get("exclusiveMinimum"))
        with pytest.raises(ParamValidationError, match="less than"):
            param.resolve(low - 1, suppress_exception=False)


def test_the_form_says_n_users_does_not_bound_training(dagbag):
    text = dagbag.dags["recsys_training"].params.get_param("n_users").description
    assert "every lake partition" in text


def test_a_gate_failure_is_a_named_failing_branch_and_the_links_tasks_exist(dagbag):
    from vetted_operators import GateFailedOperator, GateRejected, version_failed

    dag = dagbag.dags["recsys_training"]
    keep = dag.get_task("keep_champion")
    assert isinstance(keep, GateFailedOperator) and "gate failed" in keep.task_display_name
    assert dag.get_task("promote_approved").actor == "reviewer"
    # the gate's own reasons stand: the failure callback leaves a rejected version's tags alone
    assert version_failed({"exception": GateRejected("gate failed"), "ti": None}) is None


def test_the_trigger_route_takes_the_forms_defaults_and_refuses_out_of_range_numbers(airflow_db, monkeypatch):
    """Through Airflow's own REST route the UI's form posts to: the defaults start a run; a number past its limit
    is answered 400 with the limit named, and no run is created."""
    import os
    import subprocess
    import sys

    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "dags", "reserialize"], check=True, capture_output=True, env=os.environ.copy())
    client = TestClient(create_app(apps="core"))
    headers = {"Authorization": f"Bearer {client.get('/auth/token').json()['access_token']}"}
    url = "/api/v2/dags/recsys_training/dagRuns"

    started = client.post(url, headers=headers, json={"logical_date": None, "conf": {}})
    assert started.status_code == 200, started.text
    assert client.delete(f"{url}/{started.json()['dag_run_id']}", headers=headers).status_code == 204
    for conf, message in (
        ({"n_users": 5_000_000}, "n_users: 5000000 is greater than the maximum of 1000000"),
        ({"epochs": 0}, "epochs: 0 is less than the minimum of 1"),
        ({"dp_delta": 0.5}, "dp_delta: 0.5 is greater than the maximum of 0.01"),
    ):
        refused = client.post(url, headers=headers, json={"logical_date": None, "conf": conf})
        assert refused.status_code == 400 and message in refused.json()["detail"], refused.text
