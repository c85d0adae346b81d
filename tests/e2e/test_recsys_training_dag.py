"""The recsys_training DAG end to end with dag.test(), on a small synthetic set and a few training steps."""

from pathlib import Path

import pytest
from airflow.utils.state import DagRunState

from tests.e2e.conftest import lineage_events

pytestmark = pytest.mark.slow


def test_dag_registers_gates_and_promotes_then_a_failing_gate_keeps_the_champion(
    vetted_home, airflow_db, run_dag, small_run, quality_policy, recsys_dag
):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.config import Settings

    first = run_dag({**small_run, "policy": quality_policy("lenient", 0.0)})
    settings = Settings.from_env()
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    v1 = client.get_model_version_by_alias(settings.model_name, "champion")
    tags = v1.tags
    assert tags["gate.status"] == "passed"
    assert tags["privacy.dp"] == "true" and tags["privacy.unit"] == "user"
    assert float(tags["privacy.epsilon"]) <= 8.0 + 1e-6
    assert float(tags["quality.ndcg_at_10"]) >= 0.0 and tags["quality.best_baseline"]
    assert tags["gate.policy"].startswith("lenient@")
    assert "gate.quality_vs_champion" in tags and "skipped" in tags["gate.quality_vs_champion"]
    assert v1.description.startswith(f"# Gate passed: {settings.model_name} v{v1.version}")
    experiment_id = client.get_run(v1.run_id).info.experiment_id
    assert f"#/experiments/{experiment_id}/runs/{v1.run_id}/artifactPath/reports/drift.html" in v1.description
    datasets = {i.dataset.name: i.dataset for i in client.get_run(v1.run_id).inputs.dataset_inputs}
    assert set(datasets) == {"training_set", "holdout"} and all(d.digest in v1.description for d in datasets.values())
    artifacts = {a.path for a in client.list_artifacts(v1.run_id, "reports")}
    assert {"reports/drift.html", "reports/ranking.html", "reports/fairness.html"} <= artifacts
    summary_dir = Path(tags["vetted.run_dir"])
    assert (summary_dir / "summary.json").exists()
    _the_plugin_links_the_gate_task_to_its_evidence(recsys_dag, first.run_id, v1)

    assert client.get_model_version_by_alias(settings.model_name, "candidate").version == v1.version
    _every_task_reported_its_lineage(first.run_id, v1, promoted=True)

    # a second run under a policy no model can meet: registered, tagged failed, champion unchanged, and the run
    # fails at keep_champion with the gate's reasons (every stage before it succeeded)
    second = run_dag({**small_run, "seed": 8, "policy": quality_policy("impossible", 2.0)}, expect=DagRunState.FAILED)
    latest = max(client.search_model_versions(f"name='{settings.model_name}'"), key=lambda v: int(v.version))
    assert latest.version != v1.version
    assert latest.tags["gate.status"] == "failed"
    assert "gate.failed_at" not in latest.tags  # failed by the gate's checks, not by a stage
    assert latest.description.startswith("# Gate FAILED, not approved")  # beside the registry's "registered" check
    assert "fail" in latest.tags["gate.quality_vs_baseline"]
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == v1.version
    assert client.get_model_version_by_alias(settings.model_name, "candidate").version == v1.version
    assert "gate.champion_compared" in latest.tags  # the champion was re-evaluated on this hold-out
    states = _task_states(recsys_dag, second.run_id)
    assert states["keep_champion"] == "failed" and states["promote"] == "skipped"
    assert {states[t] for t in ("prepare", "ingest", "features", "train", "evaluate", "register", "gate")} == {
        "success"
    }
    _every_task_reported_its_lineage(second.run_id, latest, promoted=False)
    mlflow.set_tracking_uri("")  # leave no global state behind


def _task_states(dag, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {
            ti.task_id: str(ti.state)
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)
            )
        }


def _every_task_reported_its_lineage(run_id: str, version, promoted: bool) -> None:
    """The OpenLineage file transport got a start and an end event of each task that ran, with the datasets it
    read and wrote, and the vetted_model facet on register, gate and promote."""
    ended = {}
    for event in lineage_events(run_id):
        if event["eventType"] in ("COMPLETE", "FAIL"):
            ended[event["job"]["name"].split(".", 1)[1]] = event
    stages = ("prepare", "ingest", "features", "train", "evaluate", "register", "gate")
    assert set(stages) <= set(ended), sorted(ended)
    outputs = {task: [d["name"] for d in e.get("outputs", [])] for task, e in ended.items()}
    assert any("/events/ingest_date=" in name for name in outputs["ingest"]), outputs["ingest"]
    assert "user_recent_items" in outputs["features"]
    assert any(name.endswith(f"/runs/{version.run_id}") for name in outputs["train"])
    assert outputs["register"] == [f"models/{version.name}/versions/{version.version}"]
    last = "promote" if promoted else "keep_champion"
    facet = ended[last]["run"]["facets"]["vetted_model"]
    assert facet["model_version"] == str(version.version) and facet["mlflow_run_id"] == version.run_id
    assert facet["gate_status"] == version.tags["gate.status"] and facet["promoted"] is promoted
    assert ended[last]["eventType"] == ("COMPLETE" if promoted else "FAIL")
    assert ended["register"]["run"]["facets"]["vetted_model"]["mlflow_run_id"] == version.run_id
    if promoted:
        assert outputs["promote"] == [f"models/{version.name}@champion"]


def _the_plugin_links_the_gate_task_to_its_evidence(dag, run_id: str, version) -> None:
    """The plugin's extra links on the finished run point at this version's page and its run's reports."""
    import sys

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from vetted_links import ModelVersionLink, ReportsLink

    with create_session() as session:
        keys = {
            ti.task_id: ti.key
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)
            )
        }
    for task_id in ("register", "gate", "promote"):
        operator = dag.get_task(task_id)
        page = ModelVersionLink().get_link(operator, ti_key=keys[task_id])
        assert page == (
            f"http://127.0.0.1:5000/#/models/{version.name}/versions/{version.version}?workflowType=machine_learning"
        ), (task_id, page)
        reports = ReportsLink().get_link(operator, ti_key=keys[task_id])
        assert reports.startswith("http://127.0.0.1:5000/#/experiments/"), (task_id, reports)
        assert reports.endswith(f"/runs/{version.run_id}/artifactPath/reports?workflowType=machine_learning"), (
            task_id,
            reports,
        )
    # tasks before registration know no version: no link rather than a broken one
    assert ModelVersionLink().get_link(dag.get_task("train"), ti_key=keys["train"]) == ""
