"""Rollback: move `champion` back to `previous` (or a named version), recording who, when and why."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from ml.config import Settings
from ml.registry.audit import append_event
from ml.registry.registration import CHAMPION, PREVIOUS, alias_version
from ml.registry.tracking import client as make_client
from ml.registry.tracking import configure


def rollback(settings: Settings, to: str | None = None, reason: str = "", actor: str | None = None) -> dict[str, Any]:
    if not reason.strip():
        raise ValueError("a rollback needs a reason (--reason): the audit trail records why")
    configure(settings)
    client = make_client(settings)
    name = settings.model_name
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise ValueError(f"{name} has no champion to roll back")
    if to is None:
        prev = alias_version(client, name, PREVIOUS)
        if prev is None:
            raise ValueError(f"{name} has no 'previous' alias; name a version with --to")
        to = str(prev.version)
    target = client.get_model_version(name, str(to))  # raises if the version does not exist
    if str(target.version) == str(current.version):
        raise ValueError(f"v{to} is already the champion")
    actor = actor or getpass.getuser()
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(current.version), "rolled_back", f"{now} by {actor}: {reason}")
    client.set_model_version_tag(name, str(target.version), "restored", f"{now} by {actor}: {reason}")
    append_event(settings, "rollback", name, str(target.version), actor, f"from v{current.version}: {reason}")
    return {"champion": str(target.version), "was": str(current.version)}
