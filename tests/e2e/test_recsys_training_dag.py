"""The recsys_training DAG end to end with dag.test(), on a small synthetic set and a few training steps."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_dag_registers_gates_and_promotes_then_a_failing_gate_keeps_the_champion(vetted_home, airflow_db, run_dag, small_run,
                                                                                  quality_policy, recsys_dag):
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

    # a second run under a policy no model can meet: registered, tagged failed, champion unchanged
    run_dag({**small_run, "seed": 8, "policy": quality_policy("impossible", 2.0)})
    latest = max(client.search_model_versions(f"name='{settings.model_name}'"), key=lambda v: int(v.version))
    assert latest.version != v1.version
    assert latest.tags["gate.status"] == "failed"
    assert latest.description.startswith("# Gate FAILED, not approved")  # beside the registry's "registered" check
    assert "fail" in latest.tags["gate.quality_vs_baseline"]
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == v1.version
    assert "gate.champion_compared" in latest.tags  # the champion was re-evaluated on this hold-out
    mlflow.set_tracking_uri("")  # leave no global state behind


def _the_plugin_links_the_gate_task_to_its_evidence(dag, run_id: str, version) -> None:
    """The plugin's extra links on the finished run point at this version's page and its run's reports."""
    import sys

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from vetted_links import ModelVersionLink, ReportsLink

    with create_session() as session:
        keys = {ti.task_id: ti.key for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id))}
    for task_id in ("register", "gate", "promote"):
        operator = dag.get_task(task_id)
        page = ModelVersionLink().get_link(operator, ti_key=keys[task_id])
        assert page == (f"http://127.0.0.1:5000/#/models/{version.name}/versions/{version.version}"
                        "?workflowType=machine_learning"), (task_id, page)
        reports = ReportsLink().get_link(operator, ti_key=keys[task_id])
        assert reports.startswith("http://127.0.0.1:5000/#/experiments/"), (task_id, reports)
        assert reports.endswith(f"/runs/{version.run_id}/artifactPath/reports?workflowType=machine_learning"), (
            task_id, reports)
    # tasks before registration know no version: no link rather than a broken one
    assert ModelVersionLink().get_link(dag.get_task("train"), ti_key=keys["train"]) == ""
