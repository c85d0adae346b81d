"""Rollback: move `champion` back to `previous` (or a named version), recording who, when and why.

A rollback is a promotion like any other, so it obeys the same rule: only a version the gate passed or a
reviewer approved (`registration.PROMOTABLE`) may hold `champion`, and only such a version may hold
`previous`. There is no override: a version that was never vetted is re-run through the gate, not forced
in. The target's artifacts are downloaded and checked against the digests recorded at registration before
the alias moves; a changed file refuses the rollback and the current champion stays. Every refusal is
written to the audit trail too.
"""

from __future__ import annotations

import getpass
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.registry.audit import append_event
from ml.registry.integrity import IntegrityError
from ml.registry.registration import (
    CHAMPION,
    PREVIOUS,
    PromotionRefused,
    alias_version,
    download_verified,
    is_promotable,
    require_promotable,
)
from ml.registry.tracking import client as make_client
from ml.registry.tracking import configure


def rollback(settings: Settings, to: str | None = None, reason: str = "", actor: str | None = None) -> dict[str, Any]:
    """Make `to` (default: `previous`) champion, if it is promotable and its artifacts are intact.

    Raises ValueError for a request that names nothing to do, PromotionRefused for a target whose gate status
    does not allow it, IntegrityError for a target whose files changed; the last two are audited."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason (--reason): the audit trail records why")
    configure(settings)
    client = make_client(settings)
    name = settings.model_name
    actor = actor or getpass.getuser()
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise ValueError(f"{name} has no champion to roll back")
    if to is None:
        prev = alias_version(client, name, PREVIOUS)
        if prev is None:
            raise ValueError(f"{name} has no 'previous' alias; name a version with --to")
        to = str(prev.version)
    client.get_model_version(name, str(to))  # raises if the version does not exist
    if str(to) == str(current.version):
        raise ValueError(f"v{to} is already the champion")
    try:
        require_promotable(client, name, str(to), action="champion (rolled back to)")
        with tempfile.TemporaryDirectory(prefix="vetted-rollback-") as scratch:
            download_verified(client, name, str(to), Path(scratch))
    except (PromotionRefused, IntegrityError) as err:
        append_event(
            settings,
            "refusal",
            name,
            str(to),
            actor,
            f"rollback from v{current.version} to v{to} refused: {err} (asked because: {reason})",
        )
        raise type(err)(f"rollback refused, v{current.version} stays champion: {err}") from err
    return _move(client, settings, str(to), current, reason, actor)


def _move(client: MlflowClient, settings: Settings, to: str, current: Any, reason: str, actor: str) -> dict[str, Any]:
    """Point `champion` at `to`; `previous` at the old champion if it may hold it, else remove `previous`."""
    name = settings.model_name
    client.set_registered_model_alias(name, CHAMPION, to)
    if is_promotable(current):
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    else:
        try:
            client.delete_registered_model_alias(name, PREVIOUS)
        except MlflowException:  # not set
            pass
    now = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(current.version), "rolled_back", f"{now} by {actor}: {reason}")
    client.set_model_version_tag(name, to, "restored", f"{now} by {actor}: {reason}")
    append_event(settings, "rollback", name, to, actor, f"from v{current.version}: {reason}")
    return {"champion": to, "was": str(current.version)}
