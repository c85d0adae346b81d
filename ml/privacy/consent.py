"""Privacy requests: opt-outs and deletions, applied at every ingestion, and the deletion log.

Works on already-pseudonymized frames (columns per ml/data/schema.py), so no raw id is needed here.
- `delete`: every event and the users row of that shopper go, whatever the request's time.
- `opt_out` at time t: that shopper's events with ts >= t go; earlier events stay. Requests are deduplicated
  to one per shopper and kind. For repeated opt-outs the EARLIEST time counts: the contract has no opt-in, so a
  later opt-out cannot give back consent for the events between the two (keeping them would use data the
  shopper had refused).
The deletion log records that a shopper was deleted without holding an id anyone could use: one JSON line per
shopper, {"pseudonym_sha256": sha256(pseudonym), "deleted_at": iso time}. It holds neither the raw id nor the
pseudonym (with which the serving side could still look the shopper up), only a digest to check "was this
shopper deleted?" against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ml.privacy.pseudonymize import HEX_CHARS, PREFIX

log = logging.getLogger(__name__)

LOG_FIELDS = ("pseudonym_sha256", "deleted_at")


@dataclass
class ConsentResult:
    """Frames after the requests, who was deleted, who opted out (and from when), and what was removed."""

    events: pd.DataFrame
    users: pd.DataFrame
    deleted: set[str] = field(default_factory=set)
    opted_out: dict[str, pd.Timestamp] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _require(df: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} lacks column(s) {missing} needed to apply privacy requests; it has {list(df.columns)}"
        )


def effective_requests(requests: pd.DataFrame) -> tuple[set[str], dict[str, pd.Timestamp]]:
    """(shoppers to delete, {shopper: earliest opt-out time}), one entry per shopper and kind."""
    _require(requests, "privacy_requests", ("user_id", "request", "ts"))
    if requests.empty:
        return set(), {}
    req = requests[["user_id", "request", "ts"]].copy()
    req["ts"] = pd.to_datetime(req["ts"], utc=True, format="mixed")
    unknown = sorted(set(req["request"].dropna()) - {"opt_out", "delete"})
    if unknown:
        raise ValueError(f"unknown privacy request type(s) {unknown}; expected opt_out or delete")
    bad = req["user_id"].isna() | req["ts"].isna()
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} privacy request(s) without user_id or ts (first at row {int(bad.idxmax())}); "
            "validate the table against the contract first"
        )
    first = req.sort_values("ts", kind="stable").groupby(["user_id", "request"], sort=False).head(1)
    deleted = set(first.loc[first["request"] == "delete", "user_id"].astype(str))
    opts = first[first["request"] == "opt_out"]
    opted_out = {str(u): pd.Timestamp(t) for u, t in zip(opts["user_id"], opts["ts"], strict=True)}
    return deleted, opted_out


def apply_privacy_requests(events: pd.DataFrame, users: pd.DataFrame, requests: pd.DataFrame) -> ConsentResult:
    """Remove deleted shoppers entirely and opted-out shoppers' events from their opt-out time on."""
    _require(events, "events", ("user_id", "ts"))
    _require(users, "users", ("user_id",))
    deleted, opted_out = effective_requests(requests)

    by_deleted = events["user_id"].isin(deleted)
    event_ts = pd.to_datetime(events["ts"], utc=True, format="mixed")
    cutoff = pd.to_datetime(events["user_id"].map(opted_out), utc=True)
    by_opt_out = ~by_deleted & cutoff.notna() & (event_ts >= cutoff)
    users_gone = users["user_id"].isin(deleted)

    counts = {
        "events_removed_deleted": int(by_deleted.sum()),
        "events_removed_opt_out": int(by_opt_out.sum()),
        "users_deleted": int(users_gone.sum()),
    }
    log.info(
        "privacy requests: %d shopper(s) deleted, %d opted out; removed %d + %d event(s) and %d users row(s)",
        len(deleted),
        len(opted_out),
        counts["events_removed_deleted"],
        counts["events_removed_opt_out"],
        counts["users_deleted"],
    )
    return ConsentResult(
        events=events[~(by_deleted | by_opt_out)].reset_index(drop=True),
        users=users[~users_gone].reset_index(drop=True),
        deleted=deleted,
        opted_out=opted_out,
        counts=counts,
    )


def pseudonym_digest(pseudonym: str) -> str:
    """The deletion log's entry for a shopper: sha256 hex of the pseudonym."""
    return hashlib.sha256(pseudonym.encode("utf-8")).hexdigest()


def _check_pseudonym(value: str) -> None:
    tail = value[len(PREFIX) :]
    ok = value.startswith(PREFIX) and len(tail) == HEX_CHARS and all(c in "0123456789abcdef" for c in tail)
    if not ok:
        raise ValueError(
            "the deletion log takes pseudonyms (u_ + 32 hex digits), got a value that is not one; "
            "a raw id, even hashed, must never reach the log: pseudonymize first"
        )


def read_deletion_log(path: Path) -> list[dict[str, str]]:
    """The entries of the deletion log at `path` (an empty list when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON ({err.msg}); fix or remove that line") from err
            if not isinstance(entry, dict) or any(k not in entry for k in LOG_FIELDS):
                raise ValueError(f"{path}:{number} lacks {list(LOG_FIELDS)}: {line.strip()[:100]!r}")
            entries.append(entry)
    return entries


def append_deletion_log(path: Path, pseudonyms: Iterable[str], when: datetime) -> int:
    """Append one entry per newly deleted shopper; shoppers already in the log are skipped. Returns how many."""
    path = Path(path)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.isoformat()
    known = {entry["pseudonym_sha256"] for entry in read_deletion_log(path)}
    new: list[str] = []
    for pseudonym in pseudonyms:
        _check_pseudonym(pseudonym)
        digest = pseudonym_digest(pseudonym)
        if digest not in known:
            known.add(digest)
            new.append(digest)
    if not new:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for digest in new:
            fh.write(json.dumps({"pseudonym_sha256": digest, "deleted_at": stamp}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.info("deletion log %s: %d new entr%s", path, len(new), "y" if len(new) == 1 else "ies")
    return len(new)
