"""A shopper's recent items, read from the Feast online store at request time.

The feature is `user_recent_items:recent_items` (item ids, oldest first), keyed by the shopper's
pseudonym. Reading it is not training, so it needs no privacy budget. A store that cannot answer (not
applied yet, the file or Redis away) degrades to "no history": the shopper gets non-personalized results,
and the error is kept for /healthz rather than turned into a failed request.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from ml.config import Settings

log = logging.getLogger(__name__)

RECENT_ITEMS = "user_recent_items:recent_items"


class HistoryReader:
    """Reads recent items for one pseudonymized shopper; thread-safe (reads are serialized, ~0.2 ms each)."""

    def __init__(self, store: Any, feature: str = RECENT_ITEMS) -> None:
        self._store = store
        self.feature = feature
        self._column = feature.split(":", 1)[1]
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.errors = 0

    @classmethod
    def open(cls, settings: Settings) -> HistoryReader:
        """The home's Feast store for this profile (SQLite locally, Redis in prod)."""
        from ml.features.store import open_store, repo_config

        config = repo_config(
            settings.feast_dir,
            settings.profile,
            redis_url=settings.redis_url,
            postgres_dsn=settings.postgres_dsn,
        )
        return cls(open_store(config))

    def recent_items(self, pseudonym: str) -> list[str]:
        """The shopper's recent item ids, oldest first; [] for an unknown shopper or an unreachable store."""
        from ml.features.build import decode_history
        from ml.features.store import online_features

        try:
            with self._lock:
                got = online_features(self._store, [pseudonym], [self.feature])
        except Exception as err:
            self.errors += 1
            self.last_error = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            self.last_error_at = datetime.now(UTC)
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning(
                    "online store read failed (%d so far); answering without history: %s",
                    self.errors,
                    self.last_error,
                )
            return []
        self.last_error = None
        values = got.get(self._column) or [None]
        return decode_history(values[0])

    def warm_up(self) -> None:
        """One read, so the first shopper does not pay for opening the store (~0.2 s)."""
        self.recent_items("u_warmup")
