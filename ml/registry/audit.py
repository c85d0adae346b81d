"""The audit trail: every promotion, rejection, approval, rollback, refusal and orphan, appended, never rewritten.

A `refusal` is a promotion or rollback the registry would not make (the version's gate status, or its
artifacts' digests); an `orphan` is a run whose stage died, settled by the sweep (`ml.registry.sweep`).

One JSON line per event in `<home>/audit/audit.jsonl` (the prod profile points VETTED_HOME at a shared
volume). Each line carries the previous line's hash, so an edited or deleted line breaks the chain.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.config import Settings

EVENTS = ("promotion", "rejection", "approval", "rollback", "refusal", "orphan")


def audit_path(settings: Settings) -> Path:
    return settings.home / "audit" / "audit.jsonl"


def _last_hash(path: Path) -> str:
    if not path.exists():
        return ""
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1])["hash"] if lines else ""


def append_event(
    settings: Settings, event: str, model: str, version: str | None, actor: str | None, reason: str
) -> dict[str, Any]:
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; one of {EVENTS}")
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "event": event,
        "model": model,
        "version": version,
        "actor": actor or getpass.getuser(),
        "reason": reason,
        "prev": _last_hash(path),
    }
    record["hash"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def read_events(settings: Settings) -> list[dict[str, Any]]:
    """Every event, oldest first; raises if the hash chain was broken (a line edited or removed)."""
    path = audit_path(settings)
    if not path.exists():
        return []
    records, prev = [], ""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        record = json.loads(line)
        body = {k: v for k, v in record.items() if k != "hash"}
        if (
            record["prev"] != prev
            or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() != record["hash"]
        ):
            raise ValueError(f"{path}:{n}: the audit chain is broken (a line was edited or removed)")
        prev = record["hash"]
        records.append(record)
    return records
