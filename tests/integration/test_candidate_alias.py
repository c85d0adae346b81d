"""`candidate` is the newest version the gate let through (passed, waiting for a reviewer, or approved); a version
the gate failed, a reviewer rejected, or a stage failed never holds it. Registration alone moves nothing."""

from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.registry import registration as reg
from ml.registry.tracking import configure


def _candidate(client, settings):
    mv = reg.alias_version(client, settings.model_name, reg.CANDIDATE)
    return None if mv is None else str(mv.version)


def test_candidate_moves_only_to_versions_the_gate_let_through(vetted_home, tmp_path):
    settings = Settings.from_env()
    configure(settings)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    name = settings.model_name

    def register(status: str) -> str:
        mv = reg.register(client, name, str(tmp_path), run_id=None, tags={"gate.status": status}, description="card")
        return str(mv.version)

    v1 = register("pending")
    assert _candidate(client, settings) is None  # registered, not yet gated
    reg.point_candidate(client, name, v1, "passed")
    assert _candidate(client, settings) == v1

    v2 = register("pending")
    reg.point_candidate(client, name, v2, "failed")  # the gate failed v2: v1 stays the candidate
    assert _candidate(client, settings) == v1

    v3 = register("pending")
    reg.point_candidate(client, name, v3, "pending_approval")
    assert _candidate(client, settings) == v3
    reg.point_candidate(client, name, v3, "rejected")  # the reviewer said no: nobody is the candidate
    assert _candidate(client, settings) is None

    v4 = register("pending")
    reg.point_candidate(client, name, v4, "passed")
    reg.mark_failed(client, name, v4, "promote", "the registry went away")  # a stage failed after the gate
    assert _candidate(client, settings) is None
