"""Shoppers who must not get personalized answers: opt-out and deletion requests from the lake.

The lake table `privacy_requests` holds pseudonymized user ids with `opt_out` or `delete`. The set is
re-read when the table's partition files change, checked at most every `refresh_seconds` on the request
path (a few file stats; the parquet is read only when something changed, and by one request at a time,
the others keep answering from the set they have). A shopper in the set gets non-personalized results
and no impression is logged for them. Until the table has been read once, nobody is personalized (the
service fails closed on privacy); the read error is shown in /healthz.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ml.data import lake

log = logging.getLogger(__name__)

TABLE = "privacy_requests"


class OptOutList:
    def __init__(self, lake_dir: Path, refresh_seconds: float = 10.0) -> None:
        self.lake_dir = Path(lake_dir)
        self.refresh_seconds = refresh_seconds
        self._users: frozenset[str] = frozenset()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._checked = float("-inf")
        self._refreshing = threading.Lock()
        self.last_error: str | None = None
        self.loaded = False
        self.refresh(force=True)

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in lake.partitions(self.lake_dir, TABLE):
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the requests if their files changed; True when the set was re-read."""
        if not self._refreshing.acquire(blocking=force):
            return False  # another request is refreshing: use the current set
        try:
            self._checked = time.monotonic()
            signature = self._files_signature()
            if signature == self._signature and not force:
                return False
            frame = lake.read_table(self.lake_dir, TABLE)
            users = frozenset(frame["user_id"].dropna().astype(str)) if "user_id" in frame.columns else frozenset()
            self._users, self._signature = users, signature  # one assignment each: readers see old or new
            self.last_error = None
            self.loaded = True
            log.info("privacy requests: %d shopper(s) get non-personalized answers", len(users))
            return True
        except Exception as err:  # a half-written file: keep the old set and try again later
            self.last_error = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            log.warning("could not read privacy requests from %s: %s", self.lake_dir, self.last_error)
            return False
        finally:
            self._refreshing.release()

    def __contains__(self, pseudonym: object) -> bool:
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return not self.loaded or pseudonym in self._users

    def __len__(self) -> int:
        return len(self._users)
