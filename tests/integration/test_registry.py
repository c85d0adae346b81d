"""Promotion reads the recorded decision; rollback and reviews move aliases and land in the audit trail."""

import pytest
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.registry import registration as reg
from ml.registry.audit import append_event, audit_path, read_events
from ml.registry.rollback import rollback
from ml.registry.tracking import configure


@pytest.fixture
def registry(vetted_home, tmp_path):
    settings = Settings.from_env()
    configure(settings)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    source = tmp_path / "model"
    source.mkdir()

    def add(status: str) -> str:
        mv = reg.register(client, settings.model_name, str(source), run_id=None, tags={"gate.status": status},
                          description="card")
        return str(mv.version)

    return settings, client, add


def test_only_a_recorded_pass_is_promoted_and_the_old_champion_becomes_previous(registry):
    settings, client, add = registry
    v1, v2, v3 = add("passed"), add("failed"), add("approved")
    assert reg.promote(client, settings.model_name, v1)["champion"] == v1
    with pytest.raises(reg.PromotionRefused, match="gate.status='failed'"):
        reg.promote(client, settings.model_name, v2)
    assert str(reg.alias_version(client, settings.model_name, "champion").version) == v1
    moved = reg.promote(client, settings.model_name, v3)
    assert moved == {"champion": v3, "previous": v1}
    assert str(reg.alias_version(client, settings.model_name, "previous").version) == v1


def test_rollback_restores_previous_and_the_audit_log_shows_who_and_why(registry):
    settings, client, add = registry
    v1, v2 = add("passed"), add("passed")
    reg.promote(client, settings.model_name, v1)
    reg.promote(client, settings.model_name, v2)
    moved = rollback(settings, reason="conversion dropped", actor="alice")
    assert moved == {"champion": v1, "was": v2}
    assert str(reg.alias_version(client, settings.model_name, "champion").version) == v1
    event = read_events(settings)[-1]
    assert (event["event"], event["actor"], event["version"]) == ("rollback", "alice", v1)
    assert "conversion dropped" in event["reason"]
    with pytest.raises(ValueError, match="needs a reason"):
        rollback(settings, reason=" ")
    with pytest.raises(ValueError, match="already the champion"):
        rollback(settings, to=v1, reason="again")


def test_the_audit_chain_detects_an_edited_line(vetted_home):
    settings = Settings.from_env()
    append_event(settings, "promotion", "m", "1", "bob", "passed")
    append_event(settings, "rollback", "m", "1", "bob", "oops")
    path = audit_path(settings)
    path.write_text(path.read_text().replace("oops", "fine"))
    with pytest.raises(ValueError, match="audit chain is broken"):
        read_events(settings)
