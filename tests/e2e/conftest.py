"""Shared pieces of the DAG tests: a small run, policies we control, the DAG and a way to run it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# the DAG runs here report their lineage to a file, read back by the tests (the provider reads this once, before
# the first task runs; tests/conftest.py gave Airflow its private home)
LINEAGE_FILE = Path(os.environ["AIRFLOW_HOME"]) / "lineage.jsonl"
os.environ.setdefault(
    "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "file", "log_file_path": str(LINEAGE_FILE), "append": True})
)
os.environ.setdefault("AIRFLOW__OPENLINEAGE__NAMESPACE", "vetted")

# a run small enough for CI: 400 shoppers, a few DP steps, no per-slice reports
SMALL_RUN = {
    "source": "synthetic",
    "n_users": 400,
    "n_items": 200,
    "epochs": 1,
    "max_steps": 6,
    "batch_size": 64,
    "slice_reports": False,
}


@pytest.fixture
def small_run() -> dict:
    return dict(SMALL_RUN)


@pytest.fixture
def quality_policy(tmp_path: Path) -> Callable[[str, float], str]:
    """A policy whose quality bar we set, so pass and fail do not depend on a tiny model's luck."""
    from ml.gate.policy import load_policy

    def write(name: str, ndcg_threshold: float) -> str:
        policy = yaml.safe_load((ROOT / "ml" / "gate" / "default_policy.yaml").read_text())
        policy["name"] = name
        for check in policy["checks"]:
            if check["name"] == "quality_vs_baseline":
                check.pop("reference", None), check.pop("factor", None), check.pop("offset", None)
                check["threshold"] = ndcg_threshold
            if check["metric"].startswith(("fairness.", "privacy.mia", "search.", "champion.search")):
                check["blocking"] = False  # a 6-step model on 400 shoppers is not the point of these tests
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
        load_policy(path)  # valid
        return str(path)

    return write


@pytest.fixture
def recsys_dag():
    sys.path.insert(0, str(ROOT / "dags"))
    import recsys_training

    return recsys_training.dag_object


@pytest.fixture
def run_dag(recsys_dag):
    """dag.test() with a conf; the run must end as `expect` says (a failed gate fails the run: keep_champion)."""
    from airflow.utils.state import DagRunState

    def run(conf: dict, expect: DagRunState = DagRunState.SUCCESS):
        result = recsys_dag.test(run_conf=conf)
        assert result.state == expect, f"dag run ended {result.state}, expected {expect}"
        return result

    return run


def lineage_events(run_id: str) -> list[dict]:
    """The OpenLineage events the provider wrote for one DAG run's tasks."""
    if not LINEAGE_FILE.exists():
        return []
    events = [json.loads(line) for line in LINEAGE_FILE.read_text().splitlines() if line.strip()]
    return [e for e in events if (e["run"]["facets"].get("airflow") or {}).get("dagRun", {}).get("run_id") == run_id]
