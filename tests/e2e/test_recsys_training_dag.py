"""The recsys_training DAG end to end with dag.test(), on a small synthetic set and a few training steps."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SMALL = {"source": "synthetic", "n_users": 400, "n_items": 200, "epochs": 1, "max_steps": 6, "batch_size": 64,
         "slice_reports": False}


@pytest.fixture(scope="module")
def airflow_db():
    import os

    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())


def _policy(tmp_path: Path, name: str, ndcg_threshold: float) -> str:
    """A policy whose quality bar we control, so pass and fail do not depend on a tiny model's luck."""
    from ml.gate.policy import load_policy

    default = yaml.safe_load((ROOT / "ml" / "gate" / "default_policy.yaml").read_text())
    default["name"] = name
    for check in default["checks"]:
        if check["name"] == "quality_vs_baseline":
            check.pop("reference", None), check.pop("factor", None), check.pop("offset", None)
            check["threshold"] = ndcg_threshold
        if check["metric"].startswith(("fairness.", "privacy.mia")):
            check["blocking"] = False  # a 6-step model on 400 shoppers is not the point of this test
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(default, sort_keys=False))
    load_policy(path)  # valid
    return str(path)


def _run(dag, conf):
    from airflow.utils.state import DagRunState

    run = dag.test(run_conf=conf)
    assert run.state == DagRunState.SUCCESS, f"dag run ended {run.state}"
    return run


def test_dag_registers_gates_and_promotes_then_a_failing_gate_keeps_the_champion(vetted_home, tmp_path, airflow_db):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.config import Settings

    sys.path.insert(0, str(ROOT / "dags"))
    import recsys_training

    dag = recsys_training.dag_object
    _run(dag, {**SMALL, "policy": _policy(tmp_path, "lenient", 0.0)})
    settings = Settings.from_env()
    client = MlflowClient(settings.tracking_uri)
    v1 = client.get_model_version_by_alias(settings.model_name, "champion")
    tags = v1.tags
    assert tags["gate.status"] == "passed"
    assert tags["privacy.dp"] == "true" and tags["privacy.unit"] == "user"
    assert float(tags["privacy.epsilon"]) <= 8.0 + 1e-6
    assert float(tags["quality.ndcg_at_10"]) >= 0.0 and tags["quality.best_baseline"]
    assert tags["gate.policy"].startswith("lenient@")
    assert "gate.quality_vs_champion" in tags and "skipped" in tags["gate.quality_vs_champion"]
    assert v1.description.startswith("# Model card")
    artifacts = {a.path for a in client.list_artifacts(v1.run_id, "reports")}
    assert {"reports/drift.html", "reports/ranking.html", "reports/fairness.html"} <= artifacts
    summary_dir = Path(tags["vetted.run_dir"])
    assert (summary_dir / "summary.json").exists()

    # a second run under a policy no model can meet: registered, tagged failed, champion unchanged
    _run(dag, {**SMALL, "seed": 8, "policy": _policy(tmp_path, "impossible", 2.0)})
    latest = max(client.search_model_versions(f"name='{settings.model_name}'"), key=lambda v: int(v.version))
    assert latest.version != v1.version
    assert latest.tags["gate.status"] == "failed"
    assert "fail" in latest.tags["gate.quality_vs_baseline"]
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == v1.version
    assert "gate.champion_compared" in latest.tags  # the champion was re-evaluated on this hold-out
    mlflow.set_tracking_uri("")  # leave no global state behind
