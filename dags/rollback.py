"""rollback: move the champion alias back to `previous` (or a named version), recording who and why.

The same function as `vetted rollback`; serving follows the alias within its poll interval. Only a version
the gate passed or a reviewer approved, whose artifacts match the digests recorded at registration, can be
rolled back to; anything else fails the task with the reason, leaves the champion and is audited.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task


@dag(
    dag_id="rollback",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "to_version": Param(None, type=["null", "string"], description="Empty: the 'previous' alias"),
        "reason": Param("", type="string", minLength=3, description="Why (kept in the audit log)"),
    },
    tags=["vetted", "registry"],
    doc_md=__doc__,
)
def rollback():
    @task
    def move_champion(params=None, dag_run=None) -> dict:
        from ml.config import Settings
        from ml.registry.rollback import rollback as do_rollback

        actor = getattr(dag_run, "triggering_user_name", None) or "airflow"
        return do_rollback(
            Settings.from_env(), to=params.get("to_version") or None, reason=params["reason"], actor=actor
        )

    move_champion()


dag_object = rollback()

if __name__ == "__main__":
    dag_object.test()
