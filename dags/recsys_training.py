"""recsys_training: ingest -> features -> train -> evaluate -> register -> gate -> promote (or not).

Every task runs one stage of `ml.pipeline.stages` on the run folder, the same functions `vetted run` calls
(the operators are in `plugins/vetted_operators.py`). Runs weekly, when the drift monitor updates the drift
asset, and from the UI's form (Params, validated; `prepare` also checks the policy and the source folder).

Outcomes: a passed gate promotes; a gate that needs approval waits in *Required Actions*; a **failed gate fails
the `keep_champion` task and the run** (the champion stays), with the gate's table as the error. The tasks from
`register` on have the extra links *MLflow model version* and *Model card & reports*, and print the same
addresses in their logs.

Ingestion is incremental by the run's logical date: the run ingests into that date's lake partition the events
known by its end, so `airflow backfill create` of older dates writes those dates' partitions and leaves the
others alone. An asset-triggered run has no logical date; its `run_after` date is used. Training reads every
lake partition up to the run's date, not only this run's. Every task from `register` on has an
`on_failure_callback`: a run that dies after registration leaves its version `gate.status=failed`, never champion.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Label, Param, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable
from vetted_operators import (
    GateFailedOperator,
    GateOperator,
    ReviewOperator,
    StageOperator,
    ingest_date,
    library_output_to_log,
    load_context,
    reviewer,
    run_folder_name,
    version_failed,
)

from ml.config import RunConfig
from ml.data.sources import REGISTRY

LAKE = Asset("vetted://lake", group="vetted")
MODEL = Asset("vetted://registry/vetted-recsys", group="vetted")
DRIFT = Asset("vetted://drift", group="vetted")
AFTER_REGISTRATION = {"on_failure_callback": version_failed}


def recsys_training() -> None:
    run_dir = stage("ingest", prepare(), outlets=[LAKE])
    run_dir = stage("features", run_dir)
    run_dir = stage("train", run_dir, queue="gpu")
    run_dir = stage("evaluate", run_dir)
    run_dir = stage("register", run_dir, **AFTER_REGISTRATION)

    decision = GateOperator(task_id="gate", run_dir=run_dir, **AFTER_REGISTRATION)
    (
        decision
        >> Label("gate passed")
        >> stage("promote", run_dir, outlets=[MODEL], trigger_rule="none_failed_min_one_success", **AFTER_REGISTRATION)
    )
    (
        decision
        >> Label("gate failed")
        >> GateFailedOperator(
            task_id="keep_champion",
            task_display_name="gate failed: champion kept",
            stage="promote",
            run_dir=run_dir,
            **AFTER_REGISTRATION,
        )
    )
    asked = review()
    decision >> Label("approval required") >> asked
    asked >> Label("approved") >> (approved := record_approval(run_dir))
    asked >> Label("rejected") >> record_rejection(run_dir)
    stage("promote", approved, task_id="promote_approved", actor="reviewer", outlets=[MODEL], **AFTER_REGISTRATION)


def stage(name: str, run_dir: Any, task_id: str | None = None, **options: Any) -> Any:
    """One stage of ml.pipeline.stages as a task; its output (the run folder) feeds the next."""
    return StageOperator(task_id=task_id or name, stage=name, run_dir=run_dir, **options).output


@task
def prepare(params=None, run_id=None, logical_date=None, dag_run=None) -> str:
    """Settle dead runs, check the run's files (policy, source folder), write the run folder; returns its path."""
    from ml.config import Settings
    from ml.gate.policy import preflight
    from ml.pipeline.context import RunContext
    from ml.registry.sweep import sweep

    with library_output_to_log():
        sweep(Settings.from_env(), actor="airflow")  # first settle runs whose stage died (ml.registry.sweep)
    # fixed here, once, so a retried ingest writes the same partition even after midnight
    config = RunConfig.from_dict(
        {**dict(params or {}), "ingest_date": ingest_date(logical_date, dag_run), "run_name": run_id or ""}
    )
    preflight(config.policy, {"path": config.path})  # a bad policy fails here, not at the gate
    return str(RunContext.create(Settings.from_env(), config, name=run_folder_name(run_id)).run_dir)


def review() -> ReviewOperator:
    return ReviewOperator(
        task_id="review",
        subject="Promote {{ dag_run.conf.get('source', params.source) }} model? The gate passed; your approval is needed",
        body="{{ ti.xcom_pull(task_ids='gate', key='gate_summary') }}",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "record_approval", "Reject": "record_rejection"},
        params={"note": Param("", type="string", description="Why (kept on the model version and in the audit log)")},
        response_timeout=timedelta(days=7),
        defaults=["Reject"],
        **AFTER_REGISTRATION,
    )


@task(**AFTER_REGISTRATION)
def record_approval(run_dir: str, ti=None) -> str:
    from ml.pipeline import stages

    answer = ti.xcom_pull(task_ids="review", key="answer") or {}
    with library_output_to_log():
        stages.review(load_context(run_dir), True, reviewer(answer), (answer.get("params_input") or {}).get("note", ""))
    return run_dir


@task(task_display_name="reviewer rejected: champion kept", **AFTER_REGISTRATION)
def record_rejection(run_dir: str, ti=None) -> dict:
    from ml.pipeline import stages

    answer = ti.xcom_pull(task_ids="review", key="answer") or {}
    ctx = load_context(run_dir)
    with library_output_to_log():
        stages.review(ctx, False, reviewer(answer), (answer.get("params_input") or {}).get("note", ""))
        return stages.promote(ctx)  # records the outcome; the champion stays


# ------------------------------------------------------------------------------------------------ the form
D = RunConfig()  # the form's defaults are the library's, so the DAG and `vetted run` agree


def bounded(
    default: Any,
    kind: str,
    low: float,
    high: float,
    description: str,
    *,
    optional: bool = False,
    exclusive_low: bool = False,
) -> Param:
    """A number Param whose limits are checked on submit and stated in its text.

    The limits go in `allOf`, not top-level `minimum`/`maximum`: the UI's number box clamps to those on blur, so an
    out-of-range entry would be changed silently; here it is refused with "... is greater than the maximum of ..."."""
    low_key = "exclusiveMinimum" if exclusive_low else "minimum"
    limits = f"{'above' if exclusive_low else 'from'} {low:,} to {high:,}"
    return Param(
        default,
        type=["null", kind] if optional else kind,
        allOf=[{low_key: low, "maximum": high}],
        description=f"{description} ({limits}{'; empty: see above' if optional else ''})",
    )


PARAMS = {
    # the sources, what each needs and holds: the one registry (ml.data.sources.REGISTRY), as `vetted run` reads it
    "source": Param(
        D.source,
        enum=list(REGISTRY),
        description="Which source reads the data: " + "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY.values()),
    ),
    "path": Param(
        None,
        type=["null", "string"],
        description="Folder or fsspec URL of a source that reads files ("
        + ", ".join(s.name for s in REGISTRY.values() if s.needs == "path")
        + "); for "
        + "; ".join(f"{s.name}: {s.path_note}" for s in REGISTRY.values() if s.path_note)
        + "; leave empty for synthetic",
    ),
    "url": Param(
        None,
        type=["null", "string"],
        description="Database URL of a source that reads one ("
        + ", ".join(s.name for s in REGISTRY.values() if s.needs == "url")
        + "). The form is stored in clear, so "
        "write a password as *** (postgresql://user:***@host/db): each task then takes the whole URL from "
        "its VETTED_SOURCE_URL, which must name the same database",
    ),
    "n_users": bounded(
        D.n_users,
        "integer",
        50,
        1_000_000,
        "Synthetic shoppers this run ingests. It does not bound training: training reads every lake "
        "partition ingested so far (up to this run's date), so earlier runs' shoppers count too",
    ),
    "n_items": bounded(D.n_items, "integer", 50, 200_000, "Synthetic catalogue size"),
    "epochs": bounded(
        D.epochs, "integer", 1, 100, "Passes over the shoppers at most; training stops at max_steps first"
    ),
    "max_steps": bounded(
        D.max_steps, "integer", 1, 100_000, "Training steps at most; the DP noise is calibrated to them"
    ),
    "batch_size": bounded(
        D.batch_size,
        "integer",
        0,
        4096,
        "Expected shoppers per step; 0 = chosen from the data: the largest batch before a doubling "
        "cuts the DP noise per step by less than 15% (the model card says why)",
    ),
    "examples_per_user": bounded(
        D.examples_per_user,
        "integer",
        0,
        64,
        "Examples of each sampled shopper per step; under DP its gradient over them is clipped "
        "once. 0 = chosen from the data: 2,048 example slots a step shared among the batch, at "
        "most what most shoppers have",
    ),
    "negatives": bounded(
        D.negatives,
        "integer",
        0,
        1_000_000,
        "Items a training step scores besides each example's target, a uniform sample, when the "
        "catalogue is larger: a step's work stays flat as the catalogue grows. 0 = every item",
    ),
    "dp_enabled": Param(
        D.dp.enabled,
        type="boolean",
        description="User-level DP-SGD on or off (the default policy refuses a non-DP model)",
    ),
    "dp_target_epsilon": bounded(
        D.dp.target_epsilon,
        "number",
        0,
        100,
        "Privacy budget epsilon of the whole model; the default policy needs <= 8",
        exclusive_low=True,
    ),
    "dp_delta": bounded(
        None, "number", 0, 0.01, "DP delta; empty = n_users ** -1.1", optional=True, exclusive_low=True
    ),
    "dp_transitions_floor": bounded(
        D.dp.transitions_floor,
        "number",
        0,
        10,
        "Noise deviations taken off each noised item-transition count; lower keeps pairs "
        "few shoppers share. Empty = chosen from the data: the count of the most-shared "
        "quarter of transitions in noise deviations, 1 to 2",
        optional=True,
    ),
    "policy": Param(
        None,
        type=["null", "string"],
        description="Gate policy YAML path; empty = the packaged default (ml/gate/default_policy.yaml). Checked before the run starts",
    ),
    "require_approval": Param(
        os.environ.get("VETTED_PROFILE", "local") == "prod",
        type="boolean",
        description="Hold promotion for a reviewer (on or off; default on in the prod profile)",
    ),
    "slice_reports": Param(
        D.slice_reports,
        type="boolean",
        description="One Evidently ranking report per user group (on or off; slower evaluation)",
    ),
    "seed": bounded(
        D.seed, "integer", 0, 2**32 - 1, "Seed of the synthetic data, the split and training (reproducible runs)"
    ),
    "world_size": bounded(
        D.world_size, "integer", 0, 64, "Training processes, one per GPU; 0 = every visible GPU when there are several"
    ),
}

dag_object = dag(
    dag_id="recsys_training",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=DRIFT),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["vetted", "training"],
    doc_md=__doc__,
)(recsys_training)()

if __name__ == "__main__":
    dag_object.test()
