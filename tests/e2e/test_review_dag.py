"""The human approval path of recsys_training: a reviewer approves, then another run is rejected.

`dag.test()` runs no scheduler and waits for the reviewer forever, so a responder thread plays the
reviewer: it waits for the `review` task's request (its HITL detail row), then answers it through
Airflow's own REST route (`PATCH .../hitlDetails`), the call the UI's Required Actions page makes.
FIELD-NOTES: import every model and configure the mappers in the main thread first, or the thread and
`dag.test()` deadlock.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.slow


class Reviewer(threading.Thread):
    """Answers the first unanswered review request created after it started, like a person in the UI."""

    def __init__(self, choice: str, note: str, timeout: float = 900.0) -> None:
        super().__init__(daemon=True)
        self.choice, self.note, self.timeout = choice, note, timeout
        self.started_at = datetime.now(UTC)
        self.answer: dict | None = None
        self.request: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._answer_when_asked()
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.error = exc

    def _pending(self):
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        with create_session() as session:
            ti = (
                session.scalars(
                    select(TaskInstance)
                    .options(joinedload(TaskInstance.hitl_detail))
                    .where(TaskInstance.task_id == "review")
                )
                .unique()
                .all()
            )
            for t in ti:
                d = t.hitl_detail
                if d is not None and d.responded_at is None and d.created_at >= self.started_at:
                    return {
                        "dag_id": t.dag_id,
                        "run_id": t.run_id,
                        "task_id": t.task_id,
                        "map_index": t.map_index,
                        "subject": d.subject,
                        "body": d.body,
                        "options": list(d.options),
                    }
        return None

    def _answer_when_asked(self) -> None:
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        deadline = time.monotonic() + self.timeout
        while (request := self._pending()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the review task never asked for approval")
            time.sleep(1.0)
        self.request = request
        client = TestClient(create_app(apps="core"))
        token = client.get("/auth/token").json()["access_token"]
        url = (
            f"/api/v2/dags/{request['dag_id']}/dagRuns/{request['run_id']}/taskInstances/"
            f"{request['task_id']}/{request['map_index']}/hitlDetails"
        )
        response = client.patch(
            url,
            headers={"Authorization": f"Bearer {token}"},
            json={"chosen_options": [self.choice], "params_input": {"note": self.note}},
        )
        self.answer = {"status": response.status_code, "body": response.json()}


def _reviewed_run(run_dag, conf: dict, choice: str, note: str) -> Reviewer:
    reviewer = Reviewer(choice, note)
    reviewer.start()
    run_dag(conf)
    reviewer.join(timeout=5)
    if reviewer.error:
        raise reviewer.error
    assert reviewer.answer and reviewer.answer["status"] == 200, reviewer.answer
    return reviewer


def test_a_reviewer_approves_one_version_and_rejects_the_next(
    vetted_home, monkeypatch, airflow_db, run_dag, small_run, quality_policy
):
    import airflow.models
    import sqlalchemy.orm
    from mlflow.tracking import MlflowClient

    from ml.config import Settings
    from ml.registry.audit import read_events

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    airflow.models.import_all_models()
    sqlalchemy.orm.configure_mappers()
    conf = {**small_run, "policy": quality_policy("lenient", 0.0), "require_approval": True}
    settings = Settings.from_env()
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)

    # first run: the gate passes, the run waits for a reviewer, who approves
    approved = _reviewed_run(run_dag, conf, "Approve", "card read, numbers fine")
    assert "gate passed" in approved.request["subject"].lower() or "approval" in approved.request["subject"].lower()
    assert "v1" in approved.request["body"] and "quality_vs_baseline" in approved.request["body"]
    v1 = client.get_model_version_by_alias(settings.model_name, "champion")
    assert v1.version in (1, "1")
    assert v1.tags["gate.status"] == "approved"
    assert v1.tags["gate.review_note"] == "card read, numbers fine"
    assert v1.tags["gate.reviewed_by"]

    # second run: the gate passes again, the reviewer rejects; the version is marked, the champion stays
    rejected = _reviewed_run(run_dag, {**conf, "seed": 8}, "Reject", "fairness table looks off")
    assert rejected.request["run_id"] != approved.request["run_id"]
    latest = max(client.search_model_versions(f"name='{settings.model_name}'"), key=lambda v: int(v.version))
    assert str(latest.version) == "2"
    assert latest.tags["gate.status"] == "rejected"
    assert latest.tags["gate.review_note"] == "fairness table looks off"
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "1"

    events = [(e["event"], str(e["version"])) for e in read_events(settings)]
    assert ("approval", "1") in events and ("promotion", "1") in events
    assert ("rejection", "2") in events and ("promotion", "2") not in events
