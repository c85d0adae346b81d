"""What each recsys_training stage reports to OpenLineage, read from a run folder's recorded outputs."""

from __future__ import annotations

import json
from pathlib import Path

from ml.lineage import FACET, emit_stage, file_client, mlflow_namespace, stage_lineage


def _run_folder(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    run = home / "runs" / "manual__1"
    run.mkdir(parents=True)
    files = {
        "context": {
            "settings": {
                "home": str(home),
                "model_name": "vetted-recsys",
                "feast_project": "shop",
                "tracking_uri": "postgresql://mlflow:***@db.internal:5432/mlflow",
            },
            "config": {"source": "synthetic", "path": ""},
        },
        "ingest": {"ingest_date": "2026-03-02", "lake_dir": str(home / "lake"), "accepted": {"events": 9, "items": 3}},
        "features": {"feast_objects": ["user", "user_recent_items", "item_stats"]},
        "train": {"mlflow_run_id": "abc123", "experiment_id": "4"},
        "register": {"version": "7"},
        "gate": {
            "status": "failed",
            "policy": "default@0123456789ab",
            "decision": {"blocking_failures": ["quality_vs_baseline"]},
        },
        "promote": {"promoted": False, "champion": "5", "status": "failed"},
    }
    for name, data in files.items():
        (run / f"{name}.json").write_text(json.dumps(data))
    (run / "train_set.parquet").write_bytes(b"")
    return run


def _names(datasets) -> list[str]:
    return [f"{d.namespace}|{d.name}" for d in datasets]


def test_each_stage_names_what_it_read_and_wrote(tmp_path):
    run = _run_folder(tmp_path)
    lake = run.parents[1].resolve() / "lake"
    inputs, outputs, _ = stage_lineage("ingest", str(run))
    assert _names(inputs) == ["vetted-source|synthetic"]
    assert _names(outputs) == [
        f"file|{lake}/events/ingest_date=2026-03-02",
        f"file|{lake}/items/ingest_date=2026-03-02",
    ]
    inputs, outputs, _ = stage_lineage("features", str(run))
    assert _names(inputs) == [f"file|{lake}/events", f"file|{lake}/items"]
    assert "feast://shop|user_recent_items" in _names(outputs) and f"file|{run.resolve()}/train_set.parquet" in _names(
        outputs
    )
    _, outputs, _ = stage_lineage("train", str(run))
    assert _names(outputs) == ["mlflow://db.internal:5432|experiments/4/runs/abc123"]  # no credentials
    inputs, outputs, facets = stage_lineage("register", str(run))
    assert _names(outputs) == ["mlflow://db.internal:5432|models/vetted-recsys/versions/7"]
    assert facets[FACET].mlflow_run_id == "abc123" and facets[FACET].model_version == "7"


def test_promote_names_the_gate_decision_and_writes_champion_only_when_promoted(tmp_path):
    run = _run_folder(tmp_path)
    inputs, outputs, facets = stage_lineage("promote", str(run))
    assert outputs == []  # the gate failed: the champion alias was not written
    facet = facets[FACET]
    assert (facet.gate_status, facet.blocking_failures, facet.promoted, facet.champion) == (
        "failed",
        ["quality_vs_baseline"],
        False,
        "5",
    )
    (run / "promote.json").write_text(json.dumps({"promoted": True, "champion": "7"}))
    _, outputs, facets = stage_lineage("promote", str(run))
    assert _names(outputs) == ["mlflow://db.internal:5432|models/vetted-recsys@champion"]
    assert facets[FACET].promoted is True


def test_a_stage_that_ended_early_reports_what_it_can(tmp_path):
    assert stage_lineage("train", str(tmp_path / "missing")) == ([], [], {})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert stage_lineage("register", str(empty))[1] == []


def test_mlflow_namespace_never_carries_credentials():
    assert mlflow_namespace("http://user:secret@mlflow:5000") == "mlflow://mlflow:5000"
    assert mlflow_namespace("sqlite:////data/mlflow.db") == "mlflow:///data/mlflow.db"


def test_the_cli_chain_emits_each_stages_lineage_to_a_file(tmp_path):
    """`vetted run` (no Airflow) reports the same datasets: a START and a COMPLETE event per stage, one JSON a line."""
    run_dir = _run_folder(tmp_path)
    path = tmp_path / "lineage" / "events.jsonl"
    client = file_client(path)
    run_id = emit_stage(client, "ingest", str(run_dir), run_id=None, state="START")
    assert emit_stage(client, "ingest", str(run_dir), run_id=run_id, state="COMPLETE") == run_id
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert events[1]["job"] == {"namespace": "vetted", "name": "vetted_run.ingest", "facets": {}}
    inputs, outputs, _ = stage_lineage("ingest", str(run_dir))
    assert [d["name"] for d in events[1]["outputs"]] == [d.name for d in outputs] and outputs
