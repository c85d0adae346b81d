"""Served impressions, logged for the next ingestion: what each shopper was shown, by which model.

Format (one file per serving process per UTC day, JSON lines):

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

Writing is off the request path: a request queues its record (microseconds), and one background thread
writes what is queued every `flush_seconds` (one write and one flush for the lot). Nothing queued is lost
on an orderly stop: `close()` (the app's shutdown) writes everything first; only a killed process loses
its last `flush_seconds` of impressions. With `max_pending` records waiting (a stalled disk), `append`
waits for the writer instead of growing without bound.
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
    """Queues impressions and writes them to this process's file of the day from a background thread.

    Thread-safe; a failed write never fails a request (the error is kept in `last_error`, the lines
    counted in `failed`).
    """

    def __init__(self, home: Path, flush_seconds: float = 0.2, max_pending: int = 50_000) -> None:
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be positive, got {flush_seconds}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.home = Path(home)
        self.flush_seconds = float(flush_seconds)
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._queued = 0  # records ever queued
        self._done = 0  # records ever written or failed
        self._flush_now = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._day: str | None = None
        self._fh: IO[str] | None = None  # only the writer thread (or close, after it) touches the file
        self.written = 0
        self.failed = 0
        self.last_error: str | None = None

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record (see `impression_record`); written within `flush_seconds`."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the impression log is closed")
            while len(self._pending) >= self.max_pending:  # back-pressure: the writer is behind
                self._flush_now = True
                self._cond.notify_all()
                self._cond.wait(self.flush_seconds)
            self._pending.append(record)
            self._queued += 1
            if self._thread is None:  # started here, not in __init__: the serving process may be a fork
                self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
                self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued - self._done

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued so far now; True once it is on disk (or failed), False on timeout."""
        with self._cond:
            target = self._queued
            if self._done >= target:
                return True
            self._flush_now = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self) -> None:
        """Write everything queued, stop the writer and close the file. Later appends raise."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._closed or self._flush_now):
                    self._cond.wait(self.flush_seconds)
                batch, self._pending = self._pending, []
                self._flush_now = False
                stop = self._closed
            self._write(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()
                if stop and not self._pending:
                    return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Append the records to their day's file: one write per day, one flush."""
        by_day: dict[str, list[dict[str, Any]]] = {}
        for record in batch:
            by_day.setdefault(str(record.get("ts", ""))[:10], []).append(record)
        for day, records in sorted(by_day.items()):
            try:
                text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
                fh = self._file_for(day)
                fh.write(text)
                fh.flush()
                self.written += len(records)
            except Exception as err:  # the writer thread must survive anything one batch can throw
                self.failed += len(records)
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("could not log %d impression(s): %s", len(records), self.last_error)

    def _file_for(self, day: str) -> IO[str]:
        if self._fh is None or self._day != day:
            if self._fh is not None:
                self._fh.close()
            path = impression_path(self.home, day, os.getpid())
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across batches
            self._day = day
        return self._fh
