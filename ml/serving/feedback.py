"""Served impressions, logged for the next ingestion: what each shopper was shown, by which model.

Format (one file per serving process per UTC day, JSON lines, appended and flushed per request):

    <home>/feedback/impressions/date=YYYY-MM-DD/part-<pid>.jsonl

Each line is one answer the service gave:

    {"impression_id": "9f1c...",            # uuid4 hex; the response carries the same id
     "ts": "2026-05-01T12:00:00.123456Z",   # UTC, ISO 8601, when the answer was sent
     "user_id": "u_3a5b...",                # the shopper's pseudonym (HMAC key of ingestion), or null
     "kind": "recommendations",             # "recommendations" or "search"
     "item_ids": ["B001", "B017", ...],     # what was shown, best first (position = index + 1)
     "personalized": true,                  # false: non-personalized fallback (no history) or query-only
     "model_name": "vetted-recsys",
     "model_version": "3"}

What is never written: raw user ids (pseudonymized at the API boundary), query text (it can carry personal
data; ingestion scrubs search events, this log does not), and any line for a shopper with an opt-out or
deletion request (the service skips them). `user_id` is null for an anonymous search (no user_id sent):
such lines count towards item exposure only. Readers should skip a last line without a newline (a
process may have stopped mid-write) and read every `part-*.jsonl` of a date folder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

KINDS = ("recommendations", "search")


def impressions_dir(home: Path) -> Path:
    return Path(home) / "feedback" / "impressions"


def impression_path(home: Path, day: str, pid: int) -> Path:
    return impressions_dir(home) / f"date={day}" / f"part-{pid}.jsonl"


def new_impression_id() -> str:
    return uuid.uuid4().hex


def impression_record(
    impression_id: str,
    ts: datetime,
    user_id: str | None,
    kind: str,
    item_ids: Sequence[str],
    personalized: bool,
    model_name: str,
    model_version: str,
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {
        "impression_id": impression_id,
        "ts": ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "user_id": user_id,
        "kind": kind,
        "item_ids": [str(i) for i in item_ids],
        "personalized": bool(personalized),
        "model_name": model_name,
        "model_version": str(model_version),
    }


class ImpressionLog:
    """Appends impressions to this process's file of the day; thread-safe; a failed write never fails a request."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fh: IO[str] | None = None
        self.written = 0
        self.last_error: str | None = None

    def _file_for(self, day: str) -> IO[str]:
        if self._fh is None or self._day != day:
            if self._fh is not None:
                self._fh.close()
            path = impression_path(self.home, day, os.getpid())
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across requests
            self._day = day
        return self._fh

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        day = record["ts"][:10]
        try:
            with self._lock:
                fh = self._file_for(day)
                fh.write(line)
                fh.flush()
                self.written += 1
        except OSError as err:
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("could not log an impression: %s", self.last_error)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_impressions(home: Path, day: str | None = None) -> list[dict[str, Any]]:
    """Every complete impression line under `home` (one day, or all), in file order."""
    base = impressions_dir(home)
    folders = [base / f"date={day}"] if day else sorted(base.glob("date=*"))
    out: list[dict[str, Any]] = []
    for folder in folders:
        for path in sorted(folder.glob("part-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n") and line.strip():
                    out.append(json.loads(line))
    return out
