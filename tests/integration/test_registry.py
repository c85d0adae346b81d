"""Promotion reads the recorded decision; rollback and reviews move aliases and land in the audit trail.

Versions here point at a small logged-model folder (an MLmodel naming a recommender folder, as
`registration.log_model` writes it) with the digest tags registration records, so rollback's download
and verification run for real without training a model.
"""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.registry import registration as reg
from ml.registry.audit import append_event, audit_path, read_events
from ml.registry.integrity import IntegrityError, digest_tags
from ml.registry.rollback import rollback
from ml.registry.tracking import configure


def _logged_model(folder):
    """A folder shaped like a logged pyfunc: MLmodel plus artifacts/recommender/{heads.pt, config.json}."""
    rec = folder / "artifacts" / "recommender"
    rec.mkdir(parents=True)
    (rec / "heads.pt").write_bytes(b"item bias 0.0\n")
    (rec / "config.json").write_text('{"temperature": 0.05}')
    spec = {"flavors": {"python_function": {"artifacts": {"recommender": {"path": "artifacts/recommender"}}}}}
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    return rec


@pytest.fixture
def registry(vetted_home, tmp_path):
    settings = Settings.from_env()
    configure(settings)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    folders = {}

    def add(status: str | None) -> str:
        source = tmp_path / f"model{len(folders)}"
        rec = _logged_model(source)
        tags = digest_tags(rec) | ({} if status is None else {"gate.status": status})
        mv = reg.register(client, settings.model_name, str(source), run_id=None, tags=tags, description="card")
        folders[str(mv.version)] = rec
        return str(mv.version)

    add.folders = folders
    return settings, client, add


def _alias(client, settings, alias):
    mv = reg.alias_version(client, settings.model_name, alias)
    return None if mv is None else str(mv.version)


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


@pytest.mark.parametrize("status", ["failed", "pending", "rejected", "pending_approval", None])
def test_rollback_to_a_version_the_gate_did_not_pass_is_refused_and_audited(registry, status):
    settings, client, add = registry
    champion = add("passed")
    reg.promote(client, settings.model_name, champion)
    target = add(status)
    with pytest.raises(reg.PromotionRefused, match=f"v{target} has gate.status={status!r}"):
        rollback(settings, to=target, reason="try the other one", actor="bob")
    assert _alias(client, settings, "champion") == champion
    event = read_events(settings)[-1]
    assert (event["event"], event["actor"], event["version"]) == ("refusal", "bob", target)
    assert f"gate.status={status!r}" in event["reason"] and "try the other one" in event["reason"]


def test_previous_only_ever_points_at_a_promotable_version(registry):
    settings, client, add = registry
    name = settings.model_name
    legacy, v2, v3 = add("pending"), add("passed"), add("passed")
    client.set_registered_model_alias(name, "champion", legacy)  # set by hand, bypassing the gate
    assert reg.promote(client, name, v2) == {"champion": v2, "previous": None}
    assert _alias(client, settings, "previous") is None
    reg.promote(client, name, v3)
    assert _alias(client, settings, "previous") == v2
    # a version marked failed loses `previous` too
    reg.mark_failed(client, name, v2, "review", "found broken later")
    assert _alias(client, settings, "previous") is None
    # a rollback without --to to a non-promotable previous (set by hand) is refused
    client.set_registered_model_alias(name, "previous", legacy)
    with pytest.raises(reg.PromotionRefused, match="gate.status='pending'"):
        rollback(settings, reason="back")
    assert _alias(client, settings, "champion") == v3
    # rolling back from a champion that is no longer promotable leaves no `previous` pointing at it
    v4 = add("approved")
    client.set_model_version_tag(name, v3, "gate.status", "rejected")
    assert rollback(settings, to=v4, reason="v3 was rejected on review") == {"champion": v4, "was": v3}
    assert _alias(client, settings, "previous") is None


def test_rollback_to_a_version_whose_artifacts_changed_is_refused(registry):
    settings, client, add = registry
    v1, v2 = add("passed"), add("passed")
    reg.promote(client, settings.model_name, v1)
    reg.promote(client, settings.model_name, v2)
    (add.folders[v1] / "heads.pt").write_bytes(b"item bias 1000.0\n")  # written in the artifact store
    with pytest.raises(IntegrityError, match=r"v2 stays champion.*changed: heads\.pt"):
        rollback(settings, reason="conversion dropped", actor="alice")
    assert _alias(client, settings, "champion") == v2
    event = read_events(settings)[-1]
    assert (event["event"], event["version"]) == ("refusal", v1) and "heads.pt" in event["reason"]


def test_the_audit_chain_detects_an_edited_line(vetted_home):
    settings = Settings.from_env()
    append_event(settings, "promotion", "m", "1", "bob", "passed")
    append_event(settings, "rollback", "m", "1", "bob", "oops")
    path = audit_path(settings)
    path.write_text(path.read_text().replace("oops", "fine"))
    with pytest.raises(ValueError, match="audit chain is broken"):
        read_events(settings)
