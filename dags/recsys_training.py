"""recsys_training: ingest -> features -> train -> evaluate -> register -> gate -> promote (or not).

Thin wiring only: every task calls one stage of `ml.pipeline.stages` with the run folder, the same
functions `vetted run` calls. Runs weekly, when the drift monitor updates the drift asset, and from the
UI's form (Params, validated).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Label, Param, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

LAKE = Asset("vetted://lake", group="vetted")
MODEL = Asset("vetted://registry/vetted-recsys", group="vetted")
DRIFT = Asset("vetted://drift", group="vetted")

PARAMS = {
    "source": Param("synthetic", enum=["synthetic", "amazon2018", "coat"], description="Which source adapter reads the data"),
    "path": Param("", type="string", description="Folder of a file-based source (amazon2018, coat); empty for synthetic"),
    "n_users": Param(2000, type="integer", minimum=50, maximum=1_000_000, description="Synthetic shoppers"),
    "n_items": Param(1200, type="integer", minimum=50, maximum=200_000, description="Synthetic catalogue size"),
    "epochs": Param(2, type="integer", minimum=1, maximum=100),
    "max_steps": Param(60, type="integer", minimum=1, maximum=100_000),
    "batch_size": Param(64, type="integer", minimum=1, maximum=4096, description="Expected shoppers per step"),
    "dp_enabled": Param(True, type="boolean", description="User-level DP-SGD (the default policy refuses a non-DP model)"),
    "dp_target_epsilon": Param(8.0, type="number", exclusiveMinimum=0, maximum=100),
    "dp_delta": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=0.01,
                      description="Empty means n_users ** -1.1"),
    "policy": Param("", type="string", description="Gate policy YAML path; empty for the packaged default"),
    "require_approval": Param(False, type="boolean", description="Hold promotion for a reviewer"),
    "slice_reports": Param(True, type="boolean"),
    "seed": Param(7, type="integer"),
}


def _context(run_dir: str):
    from ml.pipeline.context import RunContext

    _pseudonym_key_from_connection()
    return RunContext.load(run_dir)


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
    def prepare(params=None, run_id=None, ds=None) -> str:
        from ml.config import RunConfig, Settings
        from ml.pipeline.context import RunContext

        p = dict(params or {})
        config = RunConfig.from_dict({**p, "ingest_date": ds or "", "run_name": run_id or ""})
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))
        return str(RunContext.create(Settings.from_env(), config, name=safe).run_dir)

    @task(outlets=[LAKE])
    def ingest(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.ingest(_context(run_dir))
        return run_dir

    @task
    def features(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.features(_context(run_dir))
        return run_dir

    @task(queue="gpu")
    def train(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.train(_context(run_dir))
        return run_dir

    @task
    def evaluate(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.evaluate(_context(run_dir))
        return run_dir

    @task
    def register(run_dir: str) -> str:
        from ml.pipeline import stages

        stages.register(_context(run_dir))
        return run_dir

    @task.branch
    def gate(run_dir: str) -> str:
        from ml.pipeline import stages

        status = stages.gate(_context(run_dir))["status"]
        return {"passed": "promote", "pending_approval": "promote"}.get(status, "keep_champion")

    @task(outlets=[MODEL], trigger_rule="none_failed_min_one_success")
    def promote(run_dir: str) -> dict:
        from ml.pipeline import stages

        return stages.promote(_context(run_dir))

    @task
    def keep_champion(run_dir: str) -> dict:
        """The gate failed: record it, leave the champion where it is."""
        from ml.pipeline import stages

        return stages.promote(_context(run_dir))

    run_dir = register(evaluate(train(features(ingest(prepare())))))
    decision = gate(run_dir)
    decision >> Label("gate passed") >> promote(run_dir)
    decision >> Label("gate failed") >> keep_champion(run_dir)


dag_object = recsys_training()

if __name__ == "__main__":
    dag_object.test()
