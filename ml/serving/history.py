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
    """Reads recent items for one pseudonymized shopper; thread-safe (reads are serialized: one is short beside a request, benchmarks/results/serving.md).

    The read goes straight to the online store's `online_read` (the call Feast's `get_online_features`
    makes after resolving feature references against the registry): the same stored value, without the
    per-call reference resolution and response building that cost ~3x the read itself on the request path.
    """

    def __init__(self, store: Any, feature: str = RECENT_ITEMS) -> None:
        if ":" not in feature:
            raise ValueError(f"feature must be '<feature view>:<feature>', got {feature!r}")
        self._store = store
        self.feature = feature
        self._view_name, self._column = feature.split(":", 1)
        self._view: Any = None  # (FeatureView, its join key, the provider): looked up on the first read
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.errors = 0

    @classmethod
    def open(cls, settings: Settings) -> HistoryReader:
        """The home's Feast store for this profile (SQLite locally, Redis in prod)."""
        from ml.features.store import open_store, repo_config_for

        return cls(open_store(repo_config_for(settings)))

    def recent_items(self, pseudonym: str) -> list[str]:
        """The shopper's recent item ids, oldest first; [] for an unknown shopper or an unreachable store."""
        from ml.features.build import decode_history

        try:
            with self._lock:
                value = self._read(pseudonym)
        except Exception as err:
            self._view = None
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
        return decode_history(value)

    def _read(self, pseudonym: str) -> str | None:
        """The stored string value of the feature for one shopper, None when absent."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        if self._view is None:  # and again after a failure (the definitions may have been re-applied)
            view = self._store.get_feature_view(self._view_name)
            if len(view.join_keys) != 1:
                raise ValueError(f"feature view {self._view_name} must have one join key, has {view.join_keys}")
            provider = self._store._get_provider()  # Feast has no public single-view online read
            self._view = (view, view.join_keys[0], provider)
        view, join_key, provider = self._view
        key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=pseudonym)])
        [(_, values)] = provider.online_read(self._store.config, view, [key], [self._column])
        value = (values or {}).get(self._column)
        return value.string_val if value is not None and value.WhichOneof("val") == "string_val" else None

    def warm_up(self) -> None:
        """One read, so the first shopper does not pay for opening the store (Feast opens it on first use)."""
        self.recent_items("u_warmup")
