"""A registered model that cannot be loaded fails the serving smoke test and never becomes champion."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml.config import RunConfig, Settings
from ml.pipeline import stages
from ml.pipeline.context import RunContext
from ml.registry import registration as reg

pytestmark = pytest.mark.slow


def test_a_model_that_fails_to_load_is_registered_failed_and_not_promoted(vetted_home, small_run, quality_policy):
    settings = Settings.from_env()
    ctx = RunContext.create(settings, RunConfig.from_dict({**small_run, "policy": quality_policy("lenient", 0.0)}))
    for stage in ("ingest", "features", "train", "evaluate"):
        getattr(stages, stage)(ctx)
    # the trained weights are damaged before registration (a bad disk, a truncated upload)
    heads = Path(ctx.read("train")["model_dir"]) / "heads.pt"
    heads.write_bytes(heads.read_bytes()[:100])

    registered = stages.register(ctx)
    assert registered["smoke_ok"] is False
    smoke = ctx.read("register")["smoke"]
    assert smoke["ok"] is False and smoke["error"], smoke

    decision = stages.gate(ctx)
    assert decision["status"] == "failed"
    assert "serving_smoke" in decision["blocking_failures"]
    outcome = stages.promote(ctx)
    assert outcome["promoted"] is False and outcome["champion"] is None

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    version = client.get_model_version(settings.model_name, registered["version"])
    assert version.tags["serving.smoke_ok"] == "false"
    assert version.tags["gate.status"] == "failed"
    assert "fail" in version.tags["gate.serving_smoke"]
    assert "serving_smoke" in version.description  # the card says which check failed
    assert reg.alias_version(client, settings.model_name, reg.CHAMPION) is None
