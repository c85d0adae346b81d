"""An LRU cache of recent query embeddings, shared by the threads that answer searches.

Shoppers repeat queries ("iphone case", "usb c cable"), and a query's embedding depends on nothing but its text
and the model version: a hit skips the encoder's forward pass. The key is what the encoder sees (the query's
token ids after truncation, `ml.search.onnx_encoder`), so "Red Shoes" and "red  shoes" share one entry. A cache
belongs to one loaded model version and dies with it: a new champion starts empty.

Thread-safe: every read and write holds one lock (a get moves the entry to the recent end, so reads write too).
Stored vectors are read-only copies: a caller cannot change what the next hit returns.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

DEFAULT_SIZE = 4096  # entries; a 384-float vector each, about 6 MiB in all


@dataclass(frozen=True)
class CacheStats:
    size: int  # entries held now
    capacity: int
    hits: int
    misses: int
    evictions: int


class QueryCache:
    """At most `capacity` vectors, the least recently used dropped first; capacity 0 keeps nothing."""

    def __init__(self, capacity: int = DEFAULT_SIZE) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"query cache capacity must be a whole number >= 0 (0 turns it off), got {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, key: Hashable) -> np.ndarray | None:
        """The vector stored for `key` (marked most recently used), or None."""
        if not self.enabled:
            return None
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return vector

    def put(self, key: Hashable, vector: np.ndarray) -> None:
        """Store a read-only copy of `vector` under `key`, dropping the least recently used entry when full."""
        if not self.enabled:
            return
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.flags.writeable = False
        with self._lock:
            self._entries[key] = stored
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self._evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self.capacity, self._hits, self._misses, self._evictions)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries
