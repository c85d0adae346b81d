"""What reviewers see in the MLflow UI: the run's datasets, the card's links, a failed version's first line.

A real run in a throwaway tracking store: reports logged the way the evaluate stage logs them, the card's
links checked against the artifacts that run holds, the datasets read back with mlflow.get_run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.data import lake
from ml.registry import registration as reg
from ml.registry.card import (
    CARD_ARTIFACT,
    DESCRIPTION_LIMIT,
    ML_VIEW,
    card_links,
    fit_description,
    full_card_link,
    headline,
    model_card,
)
from ml.registry.datasets import FEATURE_SERVICE, file_digest, file_uri, log_training_inputs
from ml.registry.tracking import EXPERIMENT_KIND_TAG, ML_EXPERIMENT, configure

LINK = re.compile(r"\[([^\]]+)\]\((#/experiments/(\w+)/runs/(\w+)(?:/artifactPath/([^?)\s]+))?(?:\?[^)\s]*)?)\)")
GROUPS = {
    "age_band": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"],
    "gender": ["f", "m", "x", "unknown"],
    "region": ["north", "south", "east", "west", "centre", "unknown"],
    "activity": ["light", "heavy"],
}


@pytest.fixture
def tracked(vetted_home):
    settings = Settings.from_env()
    experiment_id = configure(settings)
    yield settings, experiment_id, MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    mlflow.set_tracking_uri("")


def _reports(folder: Path) -> dict:
    """Report files laid out as the evaluate stage writes them, and its `reports` record of them."""
    folder.mkdir(parents=True)
    main = {}
    for label in ("drift", "ranking", "fairness"):
        (folder / f"{label}.html").write_text(f"<html>{label}</html>")
        main[label] = str(folder / f"{label}.html")
    slices: dict[str, dict[str, str]] = {}
    (folder / "slices").mkdir()
    for attribute, groups in GROUPS.items():
        for group in groups:
            path = folder / "slices" / f"ranking_{attribute}_{group.replace('+', 'plus')}.html"
            path.write_text("<html>slice</html>")
            slices.setdefault(attribute, {})[group] = str(path)
    return {**main, "slices": slices}


def _summary(n_checks: int, failed: str) -> str:
    """A gate summary as long as a real one: a table row and an explanation per check."""
    rows = [
        f"| check_{i} | 0.{i:04d} [0.0100, 0.2000] | >= 0.1 | -0.0{i:03d} [-0.0500, 0.0100] | the lower 95% bound "
        f"| {'fail' if f'check_{i}' == failed else 'pass'} |"
        for i in range(n_checks)
    ]
    notes = [
        f"- `check_{i}` (warn): metric.check_{i} = 0.{i:04d}, needs >= 0.1; margin at 95%, decided on the lower "
        "bound: warn (not blocking)"
        for i in range(0, n_checks, 3)
    ]
    return "\n".join(
        [
            f"**Gate failed** (policy `p@1`): {n_checks - 1} of {n_checks} checks passed.",
            "",
            "| check | value | threshold | margin | decided on | result |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *notes,
        ]
    )


def _card(links: dict, slice_links: dict, summary: str, datasets: dict) -> str:
    metrics = {"ndcg_at_10": 0.1, "recall_at_10": 0.2, "mrr": 0.09}
    evaluation = {
        "k": 10,
        "n_cases": 900,
        "mia": {"auc": 0.5},
        "drift": {"share_drifted": 0.0},
        "candidate": {"metrics": metrics, "beyond": {"coverage": 0.3}, "provider": {"ratio": 0.9}},
        "baselines": {"bm25": {"metrics": metrics, "beyond": {}, "learns": "public"}},
        "best_baseline": "bm25",
    }
    return model_card(
        name="vetted-recsys",
        version="3",
        config={
            "source": "synthetic",
            "trainable_layers": 1,
            "batch_size": 256,
            "learning_rate": 1e-4,
            "temperature": 0.05,
        },
        features={
            "window": {"train_start": "a", "split_time": "b", "holdout_end": "c"},
            "n_train_examples": 1,
            "n_train_search_examples": 0,
        },
        ingest={"read": {}, "accepted": {}, "quarantined": {}},
        train={
            "privacy": {"dp": True, "epsilon": 8.0, "delta": 1e-4, "mechanisms": []},
            "n_users": 3000,
            "audit_users": [],
            "steps": 1,
            "epochs": 1.0,
            "device": "cpu",
            "seconds": 1.0,
            "datasets": datasets,
        },
        evaluation=evaluation,
        pii_findings=0,
        smoke={"ok": True, "max_latency_ms": 12.0},
        gate={"status": "failed", "policy_label": "p@1", "summary_markdown": summary, "alternatives": []},
        champion=None,
        links=links,
        slice_links=slice_links,
    )


def _artifact_exists(client: MlflowClient, run_id: str, path: str) -> bool:
    parent = str(Path(path).parent) if "/" in path else None
    listed = {a.path: a.is_dir for a in client.list_artifacts(run_id, parent)}
    return path in listed


def test_the_registry_description_keeps_the_decision_checks_and_links_that_open_the_run_s_artifacts(tracked, tmp_path):
    settings, experiment_id, client = tracked
    reports = _reports(tmp_path / "run" / "reports")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifacts(str(tmp_path / "run" / "reports"), artifact_path="reports")  # as the evaluate stage
    run_id = run.info.run_id
    links, slice_links = card_links(experiment_id, run_id, reports, tmp_path / "run" / "reports")
    datasets = {"training_set": {"context": "training", "rows": 10, "digest": "ab" * 12, "source": "file:///lake"}}
    summary = _summary(20, failed="check_4")
    card = _card(links, slice_links, summary, datasets)
    client.log_text(run_id, card, CARD_ARTIFACT)
    full_card = full_card_link(experiment_id, run_id)
    assert links[f"Full model card (run artifact {CARD_ARTIFACT})"] == full_card

    assert len(card) > DESCRIPTION_LIMIT and len(slice_links) == sum(map(len, GROUPS.values()))
    description = fit_description(card, full_card=full_card)
    assert len(description) <= DESCRIPTION_LIMIT
    first = description.splitlines()[0]
    assert first.startswith(headline("failed", "vetted-recsys", "3")) and "FAILED, not approved" in first[:32]
    assert "**Gate: FAILED**" in description and "digest `" + "ab" * 12 + "`" in description
    assert all(row in description for row in summary.splitlines() if row.startswith("| check_"))  # every check
    found = LINK.findall(description)
    assert {label for label, *_ in found} >= set(links)  # every top link survived the cut
    assert any(url == full_card for _, url, *_ in found)  # and the note links the full card
    for label, url, exp, rid, path in LINK.findall(card):  # every link of the full card, slices included
        assert (exp, rid) == (experiment_id, run_id), url
        assert url.endswith(f"?{ML_VIEW}"), url  # a new tab opens on the model-training view
        assert not url.startswith("#/experiments/" + experiment_id + "/runs/" + run_id + "//")
        if path:
            assert _artifact_exists(client, run_id, path), (label, path)
    assert "artifactPath/reports/slices" in links[f"ranking reports by shopper group ({len(slice_links)} files)"]
    assert "/tmp" not in description and str(tmp_path) not in card  # no path of the machine that trained

    # registered with that description, then failing at promotion: the list's first line says so
    mv = reg.register(
        client,
        settings.model_name,
        f"runs:/{run_id}/model",
        run_id,
        {"gate.status": "passed"},
        description=fit_description(
            card.replace(headline("failed", "vetted-recsys", "3"), headline("passed", "vetted-recsys", "3"), 1)
        ),
    )
    reg.mark_failed(client, settings.model_name, str(mv.version), "promote", "RuntimeError: registry went away")
    after = client.get_model_version(settings.model_name, str(mv.version)).description
    assert after.splitlines()[0] == f"{headline('failed', settings.model_name, str(mv.version))} (failed at promote)"
    assert "Gate passed" not in after.splitlines()[0] and len(after) <= DESCRIPTION_LIMIT
    assert after.splitlines()[1:4] == card.splitlines()[1:4]  # the rest of the card is kept
    reg.mark_failed(client, settings.model_name, str(mv.version), "promote", "again")  # no second headline
    again = client.get_model_version(settings.model_name, str(mv.version)).description
    assert again.count("# Gate FAILED") == 1


def test_card_links_refuse_a_report_outside_the_reports_folder(tmp_path):
    with pytest.raises(ValueError):
        card_links("1", "abc", {"drift": str(tmp_path / "elsewhere.html")}, tmp_path / "reports")


def test_the_project_s_experiment_is_a_model_training_experiment(tracked):
    settings, experiment_id, client = tracked
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "genai_development")  # made before the tag
    assert configure(settings) == experiment_id
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT


def test_the_run_inputs_hold_the_training_set_and_the_hold_out_with_digests_and_sources(tracked, tmp_path):
    settings, experiment_id, client = tracked
    events = pd.DataFrame(
        {
            "event_id": ["e1"],
            "user_id": ["u1"],
            "item_id": ["i1"],
            "event_type": ["click"],
            "query": [None],
            "ts": pd.to_datetime(["2026-01-01"], utc=True),
        }
    )
    lake.write_partition(settings.lake_dir, "events", "2026-01-02", events)
    rows = {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i3"],
        "kind": ["next_item", "search", "next_item"],
        "query": [None, "espresso machine", None],
        "history": [["i0"], [], ["i1", "i2"]],
    }
    train, holdout = tmp_path / "train_set.parquet", tmp_path / "cases.parquet"
    pd.DataFrame(rows).to_parquet(train, index=False)
    pd.DataFrame(rows).iloc[:2].to_parquet(holdout, index=False)
    refs = ["user_recent_items:recent_items"]

    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_training_inputs(train, holdout, settings.lake_dir, "2026-01-02", "2026-01-01", refs)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        with pytest.raises(FileNotFoundError, match="features stage"):
            log_training_inputs(
                tmp_path / "absent.parquet", holdout, settings.lake_dir, "2026-01-02", "2026-01-01", refs
            )
        logged = log_training_inputs(train, holdout, settings.lake_dir, "2026-01-02", "2026-01-01", refs)

    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    assert set(by_name) == {"training_set", "holdout"}
    contexts = {name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for name, i in by_name.items()}
    assert contexts == {"training_set": "training", "holdout": "evaluation"}
    partition = file_uri(lake.partition_path(settings.lake_dir, "events", "2026-01-02"))
    assert partition.startswith("file:///") and partition.endswith("/lake/events/ingest_date=2026-01-02/part.parquet")
    for name, path, n in (("training_set", train, 3), ("holdout", holdout, 2)):
        dataset = by_name[name].dataset
        assert dataset.digest == file_digest(path) == logged[name]["digest"]
        source = json.loads(dataset.source)
        assert dataset.source_type == "local" and source["uri"] == partition
        assert source["feast_feature_service"] == FEATURE_SERVICE and source["feast_features"] == refs
        assert source["lake_as_of"] == "2026-01-02"
        assert json.loads(dataset.profile)["num_rows"] == n == logged[name]["rows"]
        assert {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]} == set(rows)
    # the same rows written again give the same digest; other rows another
    pd.DataFrame(rows).to_parquet(tmp_path / "again.parquet", index=False)
    assert file_digest(tmp_path / "again.parquet") == file_digest(train) != file_digest(holdout)
