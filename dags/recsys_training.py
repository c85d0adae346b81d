"""recsys_training: ingest -> features -> train -> evaluate -> register -> gate -> promote (or not).

Thin wiring only: every task calls one stage of `ml.pipeline.stages` with the run folder, the same
functions `vetted run` calls. Runs weekly, when the drift monitor updates the drift asset, and from the
UI's form (Params, validated).

Ingestion is incremental by the run's logical date: the run ingests into that date's lake partition
the events known by its end, so `airflow backfill create` of older dates writes those dates' partitions
and leaves the others alone. An asset-triggered run has no logical date; its `run_after` date is used.
Every task from `register` on has an `on_failure_callback`: a run that dies after registration leaves its
version tagged `gate.status=failed`, never champion.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Asset, Label, Param, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from ml.config import RunConfig
from ml.data.sources import REGISTRY

D = RunConfig()  # the form's defaults are the library's, so the DAG and `vetted run` agree
LAKE = Asset("vetted://lake", group="vetted")
MODEL = Asset("vetted://registry/vetted-recsys", group="vetted")
DRIFT = Asset("vetted://drift", group="vetted")

PARAMS = {
    # the sources, what each needs and holds: the one registry (ml.data.sources.REGISTRY), as `vetted run` reads it
    "source": Param(D.source, enum=list(REGISTRY), description="Which source reads the data: "
                    + "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY.values())),
    "path": Param(None, type=["null", "string"], description="Folder or fsspec URL of a source that reads files ("
                  + ", ".join(s.name for s in REGISTRY.values() if s.needs == "path") + "); for "
                  + "; ".join(f"{s.name}: {s.path_note}" for s in REGISTRY.values() if s.path_note)
                  + "; leave empty for synthetic"),
    "url": Param(None, type=["null", "string"], description="Database URL of a source that reads one ("
                 + ", ".join(s.name for s in REGISTRY.values() if s.needs == "url") + "). The form is stored in clear, so "
                 "write a password as *** (postgresql://user:***@host/db): each task then takes the whole URL from "
                 "its VETTED_SOURCE_URL, which must name the same database"),
    "n_users": Param(D.n_users, type="integer", minimum=50, maximum=1_000_000, description="Synthetic shoppers generated (50 to 1,000,000). Training reads every lake partition ingested so far, not only this run's"),
    "n_items": Param(D.n_items, type="integer", minimum=50, maximum=200_000, description="Synthetic catalogue size (50 to 200,000)"),
    "epochs": Param(D.epochs, type="integer", minimum=1, maximum=100, description="Passes over the shoppers at most (1 to 100); training stops at max_steps first"),
    "max_steps": Param(D.max_steps, type="integer", minimum=1, maximum=100_000, description="Training steps at most (1 to 100,000); the DP noise is calibrated to them"),
    "batch_size": Param(D.batch_size, type="integer", minimum=0, maximum=4096,
                        description="Expected shoppers per step; 0 = chosen from the data: the largest batch before "
                                    "a doubling cuts the DP noise per step by less than 15% (the model card says why)"),
    "examples_per_user": Param(D.examples_per_user, type="integer", minimum=0, maximum=64,
                               description="Examples of each sampled shopper per step; under DP its gradient over them "
                                           "is clipped once. 0 = chosen from the data: 2,048 example slots a step shared "
                                           "among the batch, at most what most shoppers have"),
    "dp_enabled": Param(D.dp.enabled, type="boolean", description="User-level DP-SGD (the default policy refuses a non-DP model)"),
    "dp_target_epsilon": Param(D.dp.target_epsilon, type="number", exclusiveMinimum=0, maximum=100,
                                   description="Privacy budget epsilon of the whole model (above 0, at most 100; the default policy needs <= 8)"),
    "dp_delta": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=0.01,
                      description="Empty means n_users ** -1.1"),
    "dp_transitions_floor": Param(D.dp.transitions_floor, type=["null", "number"], minimum=0, maximum=10,
                                  description="Noise deviations taken off each noised item-transition count; lower "
                                              "keeps pairs few shoppers share. Empty = chosen from the data: the count "
                                              "of the most-shared quarter of transitions in noise deviations, 1 to 2"),
    "policy": Param(None, type=["null", "string"], description="Gate policy YAML path; leave empty for the packaged default (ml/gate/default_policy.yaml)"),
    "require_approval": Param(os.environ.get("VETTED_PROFILE", "local") == "prod", type="boolean",
                              description="Hold promotion for a reviewer (default on in the prod profile)"),
    "slice_reports": Param(D.slice_reports, type="boolean", description="One Evidently ranking report per user group (slower evaluation)"),
    "seed": Param(D.seed, type="integer", description="Seed of the synthetic data, the split and training (reproducible runs)"),
    "world_size": Param(D.world_size, type="integer", minimum=0, maximum=64,
                        description="Training processes, one per GPU; 0 = every visible GPU when there are several"),
}


def _review_body(ctx) -> str:
    """What the reviewer reads before answering: the gate's table and where the evidence is."""
    g = ctx.read("gate")
    version = ctx.read("register")["version"]
    return (f"**{ctx.settings.model_name} v{version}**: gate {g['status']} under `{g['policy']}`.\n\n"
            f"{g['summary_markdown']}\n\nThe model card is the version's description in the MLflow registry "
            f"(task link *MLflow model version*); reports are in the run's artifacts (*Model card & reports*).")


class ReviewOperator(HITLBranchOperator):
    """HITLBranchOperator whose XCom `answer` keeps the reviewer's reply (the return value is the branch taken)."""

    def execute_complete(self, context, event: dict):
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            context["ti"].xcom_push(key="answer", value={
                "chosen_options": list(event.get("chosen_options") or []),
                "params_input": dict(event.get("params_input") or {}),
                "responded_by_user": dict(user) if isinstance(user, dict) else {"name": str(user)},
            })
        return super().execute_complete(context=context, event=event)


def _reviewer(answer: dict) -> str:
    user = answer.get("responded_by_user") or {}
    return user.get("name") or user.get("id") or "unknown" if isinstance(user, dict) else str(user)


def _run_folder_name(run_id: str | None) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))


def _ingest_date(logical_date, dag_run) -> str:
    """The date the run ingests: its logical date, or when it was queued for runs without one (assets)."""
    when = logical_date or getattr(dag_run, "run_after", None)
    return when.strftime("%Y-%m-%d") if when else ""


def _version_failed(context) -> None:
    """on_failure_callback of the tasks after registration: tag the run's version failed, take champion away."""
    import logging

    from ml.config import Settings
    from ml.pipeline import stages

    ti = context["ti"]
    run_dir = Settings.from_env().runs_dir / _run_folder_name(ti.run_id)
    try:
        if (run_dir / "context.json").exists():
            reason = f"task {ti.task_id} failed: {context.get('exception') or 'no exception recorded'}"
            stages.fail_version(_context(str(run_dir)), ti.task_id, reason)
    except Exception:  # a callback must not hide the task's own failure
        logging.getLogger(__name__).exception("could not mark the version of %s failed", run_dir)


def _context(run_dir: str):
    from ml.pipeline.context import RunContext

    _pseudonym_key_from_connection()
    return RunContext.load(run_dir)


def _run_stage(name: str, run_dir: str) -> str:
    """Run one stage of ml.pipeline.stages on the run folder while holding its lease (ml.pipeline.lease), so a
    task killed mid-stage (SIGKILL, a lost worker) is found and settled by the orphan sweep; returns the folder."""
    from pathlib import Path

    from ml.pipeline import stages
    from ml.pipeline.lease import stage_lease

    with stage_lease(Path(run_dir), name):
        getattr(stages, name)(_context(run_dir))
    return run_dir


def _pseudonym_key_from_connection() -> None:
    """The pseudonym key comes from the environment or the Airflow connection `vetted_pseudonym_key`."""
    import os

    if os.environ.get("VETTED_PSEUDONYM_KEY"):
        return
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection("vetted_pseudonym_key")
        if conn.password:
            os.environ["VETTED_PSEUDONYM_KEY"] = conn.password
    except Exception:  # no such connection: load_key says what to do, or the demo key is used
        pass


@dag(
    dag_id="recsys_training",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=DRIFT),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["vetted", "training"],
    doc_md=__doc__,
)
def recsys_training():
    @task
    def prepare(params=None, run_id=None, logical_date=None, dag_run=None) -> str:
        from ml.config import RunConfig, Settings
        from ml.pipeline.context import RunContext
        from ml.registry.sweep import sweep

        sweep(Settings.from_env(), actor="airflow")  # first settle runs whose stage died (ml.registry.sweep)
        p = dict(params or {})
        # fixed here, once, so a retried ingest writes the same partition even after midnight
        config = RunConfig.from_dict({**p, "ingest_date": _ingest_date(logical_date, dag_run), "run_name": run_id or ""})
        return str(RunContext.create(Settings.from_env(), config, name=_run_folder_name(run_id)).run_dir)

    @task(outlets=[LAKE])
    def ingest(run_dir: str) -> str:
        return _run_stage("ingest", run_dir)

    @task
    def features(run_dir: str) -> str:
        return _run_stage("features", run_dir)

    @task(queue="gpu")
    def train(run_dir: str) -> str:
        return _run_stage("train", run_dir)

    @task
    def evaluate(run_dir: str) -> str:
        return _run_stage("evaluate", run_dir)

    @task(on_failure_callback=_version_failed)
    def register(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.register(_context(run_dir))
        return run_dir

    @task.branch(on_failure_callback=_version_failed)
    def gate(run_dir: str, ti=None) -> str:
        from ml.pipeline import stages

        ctx = _context(run_dir)
        status = stages.gate(ctx)["status"]
        ti.xcom_push(key="gate_summary", value=_review_body(ctx))
        return {"passed": "promote", "pending_approval": "review"}.get(status, "keep_champion")

    @task(outlets=[MODEL], trigger_rule="none_failed_min_one_success", on_failure_callback=_version_failed)
    def promote(run_dir: str) -> dict:
        from ml.pipeline import stages

        return stages.promote(_context(run_dir))

    @task(on_failure_callback=_version_failed)
    def keep_champion(run_dir: str) -> dict:
        """The gate failed: record it, leave the champion where it is."""
        from ml.pipeline import stages

        return stages.promote(_context(run_dir))

    review = ReviewOperator(
        task_id="review",
        subject="Promote {{ dag_run.conf.get('source', params.source) }} model? The gate passed; your approval is needed",
        body="{{ ti.xcom_pull(task_ids='gate', key='gate_summary') }}",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "record_approval", "Reject": "record_rejection"},
        params={"note": Param("", type="string", description="Why (kept on the model version and in the audit log)")},
        response_timeout=timedelta(days=7),
        defaults=["Reject"],
        on_failure_callback=_version_failed,
    )

    @task(on_failure_callback=_version_failed)
    def record_approval(run_dir: str, ti=None) -> str:
        from ml.pipeline import stages

        answer = ti.xcom_pull(task_ids="review", key="answer") or {}
        stages.review(_context(run_dir), True, _reviewer(answer), (answer.get("params_input") or {}).get("note", ""))
        return run_dir

    @task(on_failure_callback=_version_failed)
    def record_rejection(run_dir: str, ti=None) -> dict:
        from ml.pipeline import stages

        answer = ti.xcom_pull(task_ids="review", key="answer") or {}
        ctx = _context(run_dir)
        stages.review(ctx, False, _reviewer(answer), (answer.get("params_input") or {}).get("note", ""))
        return stages.promote(ctx)  # records the outcome; the champion stays

    @task(outlets=[MODEL], on_failure_callback=_version_failed)
    def promote_approved(run_dir: str) -> dict:
        from ml.pipeline import stages

        return stages.promote(_context(run_dir), actor="reviewer")

    run_dir = register(evaluate(train(features(ingest(prepare())))))
    decision = gate(run_dir)
    decision >> Label("gate passed") >> promote(run_dir)
    decision >> Label("gate failed") >> keep_champion(run_dir)
    decision >> Label("approval required") >> review
    approval = record_approval(run_dir)
    review >> Label("approved") >> approval
    review >> Label("rejected") >> record_rejection(run_dir)
    promote_approved(approval)


dag_object = recsys_training()

if __name__ == "__main__":
    dag_object.test()
