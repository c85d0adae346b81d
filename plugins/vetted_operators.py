"""The operators of `recsys_training`: one per kind of step, each a thin call into `ml.pipeline.stages`.

- `StageOperator(stage=...)` runs one stage on the run folder (the value `prepare` returned) and returns the
  folder, so the DAG file is the flow and nothing else. It holds the run's lease (`ml.pipeline.lease`) unless
  the stage takes it itself, routes library output to the task log (no stderr: Airflow logs stderr as ERROR),
  logs where the MLflow evidence is, and reports its lineage to OpenLineage (`ml.lineage`).
- `GateOperator` decides the branch from the gate's recorded status.
- `GateFailedOperator` records a failed gate (the champion stays) and then fails, so a rejected model shows as a
  red task and a failed DAG run with the gate's table as the error, not as a green run.
- `ReviewOperator` is the reviewer's approval step; its XCom `answer` keeps who answered and why.

Imports of `ml` happen inside the methods: this module is loaded by every Airflow component (plugins folder).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger("vetted")

# stages that take the run's lease themselves (ml.pipeline.stages); the others get it here
SELF_LEASED = frozenset({"register", "gate", "promote"})
# tasks from registration on know a model version: their logs name its MLflow pages
VERSIONED = frozenset({"register", "gate", "promote"})
# libraries that attach their own stderr handlers or print progress; their records go to the task log instead
LIBRARY_LOGGERS = (
    "mlflow",
    "transformers",
    "sentence_transformers",
    "huggingface_hub",
    "feast",
    "opacus",
    "evidently",
    "alembic",
    "presidio-analyzer",
    "presidio-anonymizer",
    "urllib3",
    "torch",
)
GATE_BRANCHES = {"passed": "promote", "pending_approval": "review"}


class GateRejected(AirflowFailException):
    """The gate failed the version: the champion stays. Fails the task without retries (the decision stands)."""


# ------------------------------------------------------------------------------------------------ run folder
def run_folder_name(run_id: str | None) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))


def ingest_date(logical_date: Any, dag_run: Any) -> str:
    """The date the run ingests: its logical date, or when it was queued for runs without one (assets)."""
    when = logical_date or getattr(dag_run, "run_after", None)
    return when.strftime("%Y-%m-%d") if when else ""


def load_context(run_dir: str) -> Any:
    from ml.pipeline.context import RunContext

    return RunContext.load(run_dir)


def pseudonym_key(settings: Any) -> bytes:
    """The key ingest pseudonymizes with, handed to the stage (never written into the environment):
    $VETTED_PSEUDONYM_KEY, else the password of the Airflow connection `vetted_pseudonym_key`, else (demo only)
    the demo key file; the rules and the errors are ml.keys.load_pseudonym_key's."""
    from ml.keys import load_pseudonym_key

    value = None
    if not os.environ.get("VETTED_PSEUDONYM_KEY"):  # the environment wins, as the library's own loader has it
        try:
            from airflow.sdk import BaseHook

            value = BaseHook.get_connection("vetted_pseudonym_key").password or None
        except Exception:  # no such connection: the loader says what to do, or the demo key is used
            value = None
    return load_pseudonym_key(os.environ, settings.home, allow_demo_key=settings.demo, value=value)


def version_failed(context: Any) -> None:
    """on_failure_callback of the tasks after registration: tag the run's version failed, take champion away.

    A gate rejection is not a failure of the version's stages: the gate already recorded its reasons."""
    from ml.config import Settings
    from ml.pipeline import stages

    if isinstance(context.get("exception"), GateRejected):
        return
    ti = context["ti"]
    run_dir = Settings.from_env().runs_dir / run_folder_name(ti.run_id)
    try:
        if (run_dir / "context.json").exists():
            reason = f"task {ti.task_id} failed: {context.get('exception') or 'no exception recorded'}"
            stages.fail_version(load_context(str(run_dir)), ti.task_id, reason)
    except Exception:  # a callback must not hide the task's own failure
        log.exception("could not mark the version of %s failed", run_dir)


# ------------------------------------------------------------------------------------------------ task output
class _LogWriter(io.TextIOBase):
    """A stream that writes each line (or progress-bar frame, ended by a carriage return) as an INFO record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.pending = logger, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text.replace("\r", "\n")
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.logger.info("%s", self.pending.rstrip())
        self.pending = ""


@contextlib.contextmanager
def library_output_to_log() -> Iterator[None]:
    """Inside a task: library logging and anything printed to stderr go to the task log at their own level (INFO
    for printed text), and progress bars are off. Airflow's supervisor logs every stderr line as ERROR, so a
    healthy run would otherwise show red lines (tqdm bars, MLflow's and transformers' own stderr handlers,
    Python warnings)."""
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when first imported
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    logging.captureWarnings(True)  # warnings become WARNING records of `py.warnings`, not stderr text
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    for module, function in (
        ("transformers.utils.logging", "disable_progress_bar"),
        ("huggingface_hub.utils", "disable_progress_bars"),
    ):
        with contextlib.suppress(Exception):  # a library not imported yet reads the environment instead
            getattr(__import__(module, fromlist=[function]), function)()
    writer = _LogWriter(logging.getLogger("vetted.stderr"))
    try:
        with contextlib.redirect_stderr(writer):  # type: ignore[type-var]
            yield
    finally:
        writer.flush()
        logging.captureWarnings(False)


def mlflow_pages(run_dir: str) -> dict[str, str]:
    """The MLflow UI pages of the run's model version and reports (the task's extra links point at the same)."""
    import json

    ui = os.environ.get("VETTED_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")
    folder = Path(run_dir)

    def read(name: str) -> dict[str, Any]:
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    pages = {}
    version = read("register").get("version")
    model = read("context").get("settings", {}).get("model_name", "vetted-recsys")
    if version:
        pages["MLflow model version"] = f"{ui}/#/models/{model}/versions/{version}"
    train = read("train")
    if train.get("mlflow_run_id"):
        pages["Model card & reports"] = (
            f"{ui}/#/experiments/{train.get('experiment_id')}/runs/{train['mlflow_run_id']}/artifacts/reports"
        )
    return pages


def review_body(ctx: Any) -> str:
    """What the reviewer reads before answering: the gate's table and where the evidence is."""
    g = ctx.read("gate")
    version = ctx.read("register")["version"]
    pages = mlflow_pages(str(ctx.run_dir))
    where = "".join(f"\n- {name}: {url}" for name, url in pages.items())
    return (
        f"**{ctx.settings.model_name} v{version}**: gate {g['status']} under `{g['policy']}`.\n\n"
        f"{g['summary_markdown']}\n\nThe model card is the version's description in the MLflow registry "
        f"(task link *MLflow model version*); reports are in the run's artifacts (*Model card & reports*).{where}"
    )


# ------------------------------------------------------------------------------------------------ operators
class _StageLineage:
    """OpenLineage facets from the run folder (ml.lineage); the provider calls these after the task."""

    stage: str
    run_dir: Any

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        from ml.lineage import stage_lineage

        inputs, outputs, facets = stage_lineage(self.stage, self.run_dir if isinstance(self.run_dir, str) else None)
        return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=facets)


class StageOperator(_StageLineage, BaseOperator):
    """Run `ml.pipeline.stages.<stage>` on the run folder `run_dir`; returns the folder for the next stage."""

    template_fields = ("run_dir",)
    ui_color = "#e8f0fe"

    def __init__(self, *, stage: str, run_dir: Any, actor: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage, self.run_dir, self.actor = stage, run_dir, actor

    def execute(self, context: Any) -> str:
        with library_output_to_log():
            result = self.run_stage()
        log.info("%s: %s", self.stage, _short(result))
        self.log_pages()
        return self.run_dir

    def run_stage(self) -> dict[str, Any]:
        from ml.pipeline import stages
        from ml.pipeline.lease import stage_lease

        ctx = load_context(self.run_dir)
        kwargs: dict[str, Any] = {"actor": self.actor} if self.actor else {}
        if self.stage == "ingest":
            kwargs["key"] = pseudonym_key(ctx.settings)
        if self.stage in SELF_LEASED:
            return getattr(stages, self.stage)(ctx, **kwargs)
        # a task killed mid-stage (SIGKILL, a lost worker) leaves the lease for the orphan sweep to settle
        with stage_lease(Path(self.run_dir), self.stage):
            return getattr(stages, self.stage)(ctx, **kwargs)

    def log_pages(self) -> None:
        if self.stage in VERSIONED:
            for name, url in mlflow_pages(self.run_dir).items():
                log.info("%s: %s (also the task's extra link)", name, url)


class GateFailedOperator(StageOperator):
    """Record the failed gate (the champion stays), then fail the task with the gate's table."""

    ui_color = "#fde8e8"

    def execute(self, context: Any) -> str:
        super().execute(context)
        ctx = load_context(self.run_dir)
        gate = ctx.read("gate") if ctx.has("gate") else {}
        pages = "".join(f"\n{name}: {url}" for name, url in mlflow_pages(self.run_dir).items())
        raise GateRejected(
            f"the gate failed {ctx.settings.model_name} v{ctx.read('register')['version']} under "
            f"{gate.get('policy')}; the champion stays.\n{gate.get('summary_markdown', '')}{pages}"
        )


class GateOperator(_StageLineage, BaseBranchOperator):
    """Run the gate; continue to `promote`, `review` (approval required) or `keep_champion` (failed)."""

    template_fields = ("run_dir",)
    stage = "gate"

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def choose_branch(self, context: Any) -> str:
        from ml.pipeline import stages

        ctx = load_context(self.run_dir)
        with library_output_to_log():
            status = stages.gate(ctx)["status"]
        context["ti"].xcom_push(key="gate_summary", value=review_body(ctx))
        log.info("gate: %s\n%s", status, ctx.read("gate").get("summary_markdown", ""))
        for name, url in mlflow_pages(self.run_dir).items():
            log.info("%s: %s (also the task's extra link)", name, url)
        return GATE_BRANCHES.get(status, "keep_champion")


class ReviewOperator(_StageLineage, HITLBranchOperator):
    """HITLBranchOperator whose XCom `answer` keeps the reviewer's reply (the return value is the branch taken)."""

    stage = "review"
    run_dir = None  # the review reads the gate's table through XCom; lineage names no datasets

    def execute_complete(self, context: Any, event: dict) -> Any:
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            context["ti"].xcom_push(
                key="answer",
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "params_input": dict(event.get("params_input") or {}),
                    "responded_by_user": dict(user) if isinstance(user, dict) else {"name": str(user)},
                },
            )
        return super().execute_complete(context=context, event=event)


def reviewer(answer: dict) -> str:
    user = answer.get("responded_by_user") or {}
    return (user.get("name") or user.get("id") or "unknown") if isinstance(user, dict) else str(user)


def _short(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict)) or len(str(v)) < 120)
