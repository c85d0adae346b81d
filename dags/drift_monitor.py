"""drift_monitor: daily, compare the newest events with the champion's training window.

When the share of drifted columns passes the gate policy's drift threshold, the `signal_drift` task
updates the drift asset, and `recsys_training` (scheduled on that asset as well as weekly) retrains.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Label, Param, dag, task

DRIFT = Asset("vetted://drift", group="vetted")


@dag(
    dag_id="drift_monitor",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "window_days": Param(7, type="integer", minimum=1, maximum=90, description="Newest days compared"),
        "policy": Param("", type="string", description="Gate policy YAML; empty for the packaged default"),
    },
    tags=["vetted", "monitoring"],
    doc_md=__doc__,
)
def drift_monitor():
    @task.branch
    def check(params=None, ti=None) -> str | None:
        from ml.config import Settings
        from ml.pipeline.monitor import check_drift

        result = check_drift(Settings.from_env(), params.get("policy") or None, int(params["window_days"]))
        ti.xcom_push(key="drift", value=result)
        return "signal_drift" if result["drifted"] else "stable"

    @task(outlets=[DRIFT])
    def signal_drift(ti=None) -> dict:
        """Updating the drift asset is what triggers recsys_training."""
        return ti.xcom_pull(task_ids="check", key="drift")

    @task
    def stable(ti=None) -> dict:
        return ti.xcom_pull(task_ids="check", key="drift")

    decision = check()
    decision >> Label("drift above threshold") >> signal_drift()
    decision >> Label("stable") >> stable()


dag_object = drift_monitor()

if __name__ == "__main__":
    dag_object.test()
