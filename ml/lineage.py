"""OpenLineage for the stages of the chain: what each stage read and wrote, from its run folder.

Under Airflow, the OpenLineage provider calls a task's `get_openlineage_facets_on_complete` (the stage operators in
`plugins/vetted_operators` define it) after the task ends; `vetted run` and `vetted demo` emit the same through
`emit_stage` (`ml.cli`). This module turns the stage's recorded outputs
(`<run folder>/<stage>.json`) into datasets named by the OpenLineage naming conventions:

- lake partitions and run-folder files: namespace `file`, the absolute path;
- Feast feature views: namespace `feast://<project>`, the view's name;
- the MLflow run and model version: namespace `mlflow://<tracking host>`, `experiments/<id>/runs/<run>` and
  `models/<name>/versions/<n>`; promotion writes `models/<name>@champion`.

The register, gate and promote tasks carry a `vetted_model` run facet naming the MLflow run, the model version and
the gate decision. Where events go is the provider's `[openlineage] transport` (README, "Lineage"); without
one the provider is off and nothing here runs. A stage whose outputs are missing (it failed early) gives what
it can: lineage must never fail a task.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attr
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import RunFacet

log = logging.getLogger(__name__)

FACET = "vetted_model"
NAMESPACE = "vetted"  # the job namespace, as `make airflow` sets AIRFLOW__OPENLINEAGE__NAMESPACE
SCHEMA_URL = "https://vetted.local/spec/facets/VettedModelRunFacet.json"
PRODUCER = "https://github.com/vetted/vetted"  # the producer URI every event names
LAKE_TABLES = ("events", "items", "users")


@attr.define
class VettedModelRunFacet(RunFacet):
    """The model version a task registered, gated or promoted, with the MLflow run it came from and the gate's say."""

    model_name: str
    model_version: str | None
    mlflow_run_id: str | None
    gate_status: str | None = None
    gate_policy: str | None = None
    blocking_failures: list[str] = attr.field(factory=list)
    promoted: bool | None = None
    champion: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL


def _read(run_dir: Path, name: str) -> dict[str, Any]:
    path = run_dir / f"{name}.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _file(path: str | Path) -> Dataset:
    return Dataset(namespace="file", name=str(Path(path).resolve()))


def mlflow_namespace(tracking_uri: str) -> str:
    """`mlflow://<host>` for a server, `mlflow://<file path>` for a SQLite or file store (no credentials)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme.startswith(("http", "postgres", "mysql")):
        return f"mlflow://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}"
    return f"mlflow:///{(parsed.path or tracking_uri).lstrip('/')}"


class _Run:
    """The run folder's recorded outputs, read once."""

    def __init__(self, run_dir: str) -> None:
        self.dir = Path(run_dir)
        self.context = _read(self.dir, "context")
        settings = self.context.get("settings") or {}
        config = self.context.get("config") or {}
        self.home = Path(settings.get("home") or self.dir.parent.parent)
        self.model_name = str(settings.get("model_name") or "vetted-recsys")
        self.mlflow = mlflow_namespace(str(settings.get("tracking_uri") or ""))
        self.feast = f"feast://{settings.get('feast_project') or 'vetted'}"
        self.source, self.path = str(config.get("source") or ""), str(config.get("path") or "")
        self.ingest = _read(self.dir, "ingest")
        self.train = _read(self.dir, "train")
        self.register = _read(self.dir, "register")
        self.gate = _read(self.dir, "gate")
        self.promote = _read(self.dir, "promote")

    @property
    def lake(self) -> Path:
        return Path(self.ingest.get("lake_dir") or self.home / "lake")

    def partitions(self) -> list[Dataset]:
        date = self.ingest.get("ingest_date")
        if not date:
            return []
        tables = sorted(self.ingest.get("accepted") or {}) or list(LAKE_TABLES)
        return [_file(self.lake / table / f"ingest_date={date}") for table in tables]

    def lake_tables(self) -> list[Dataset]:
        tables = sorted(self.ingest.get("accepted") or {}) or list(LAKE_TABLES)
        return [_file(self.lake / table) for table in tables]

    def source_dataset(self) -> Dataset:
        if self.path:
            return _file(self.path)
        return Dataset(namespace="vetted-source", name=self.source or "synthetic")

    def feature_views(self) -> list[Dataset]:
        objects = _read(self.dir, "features").get("feast_objects") or []
        names = [o.get("name") if isinstance(o, dict) else str(o) for o in objects]
        return [Dataset(namespace=self.feast, name=str(n)) for n in names if n]

    def run_files(self, *names: str) -> list[Dataset]:
        return [_file(self.dir / n) for n in names if (self.dir / n).exists()]

    def mlflow_run(self) -> list[Dataset]:
        run_id = self.train.get("mlflow_run_id")
        if not run_id:
            return []
        return [Dataset(namespace=self.mlflow, name=f"experiments/{self.train.get('experiment_id')}/runs/{run_id}")]

    def model_version(self) -> list[Dataset]:
        version = self.register.get("version")
        return [Dataset(namespace=self.mlflow, name=f"models/{self.model_name}/versions/{version}")] if version else []

    def champion(self) -> list[Dataset]:
        return [Dataset(namespace=self.mlflow, name=f"models/{self.model_name}@champion")]

    def model_facet(self) -> dict[str, VettedModelRunFacet]:
        decision = self.gate.get("decision") or {}
        return {
            FACET: VettedModelRunFacet(
                model_name=self.model_name,
                model_version=self.register.get("version"),
                mlflow_run_id=self.train.get("mlflow_run_id"),
                gate_status=self.gate.get("status"),
                gate_policy=self.gate.get("policy"),
                blocking_failures=list(decision.get("blocking_failures") or []),
                promoted=self.promote.get("promoted") if self.promote else None,
                champion=str(self.promote["champion"]) if self.promote.get("champion") is not None else None,
            )
        }


def stage_lineage(stage: str, run_dir: str | None) -> tuple[list[Dataset], list[Dataset], dict[str, Any]]:
    """(inputs, outputs, run facets) of one stage of the run in `run_dir`."""
    if not run_dir or not Path(run_dir).is_dir():
        return [], [], {}
    run = _Run(run_dir)
    if stage == "ingest":
        return [run.source_dataset()], run.partitions(), {}
    if stage == "features":
        sets = run.run_files("train_set.parquet", "cases.parquet", "search_cases.parquet", "train_sequences.parquet")
        return run.lake_tables(), run.feature_views() + sets, {}
    if stage == "train":
        return run.run_files("train_set.parquet", "train_sequences.parquet"), run.mlflow_run(), {}
    if stage == "evaluate":
        return run.mlflow_run() + run.run_files("cases.parquet", "search_cases.parquet"), run.run_files("reports"), {}
    if stage == "register":
        return run.mlflow_run(), run.model_version(), run.model_facet()
    if stage in ("gate", "review"):
        return run.model_version(), run.model_version(), run.model_facet()
    if stage == "promote":
        promoted = bool(run.promote.get("promoted"))
        return run.model_version(), run.champion() if promoted else [], run.model_facet()
    return [], [], {}


def file_client(path: Path) -> Any:
    """An OpenLineage client appending each event to `path` as one JSON line."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport

    path.parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))


def cli_client(home: Path) -> Any | None:
    """The client of a chain run from the CLI: the user's OpenLineage settings when they set any (OPENLINEAGE_URL,
    OPENLINEAGE__TRANSPORT__*, OPENLINEAGE_CONFIG: the client's own rules), None when OPENLINEAGE_DISABLED is
    true, else a file under the home (`<home>/lineage/events.jsonl`, where `make airflow` writes too)."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").lower() in ("1", "true", "yes"):
        return None
    if any(k == "OPENLINEAGE_URL" or k == "OPENLINEAGE_CONFIG" or k.startswith("OPENLINEAGE__") for k in os.environ):
        from openlineage.client import OpenLineageClient

        return OpenLineageClient()
    return file_client(Path(home) / "lineage" / "events.jsonl")


def emit_stage(client: Any, stage: str, run_dir: str, run_id: str | None, state: str) -> str:
    """Emit one event (START, COMPLETE or FAIL) of the stage's job `vetted_run.<stage>` with the datasets its
    outputs name; returns the OpenLineage run id (pass it back for the stage's later events). Lineage never
    fails a stage: an error is logged."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState

    run_id = run_id or str(uuid.uuid4())
    try:
        inputs, outputs, facets = stage_lineage(stage, run_dir) if state != "START" else ([], [], {})
        client.emit(
            RunEvent(
                eventType=RunState[state],
                eventTime=datetime.now(UTC).isoformat(),
                run=Run(runId=run_id, facets=facets),
                job=Job(namespace=NAMESPACE, name=f"vetted_run.{stage}"),
                inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=d.facets) for d in inputs],
                outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=d.facets) for d in outputs],
                producer=PRODUCER,
            )
        )
    except Exception:  # noqa: BLE001 - lineage is a report, never a reason to stop the chain
        log.exception("could not emit the %s lineage event of stage %s", state, stage)
    return run_id
