"""The query-embedding cache: least recently used out first, off at capacity 0, read-only vectors, and counts that
add up when many threads use it at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ml.search.query_cache import QueryCache


def _vec(x: float) -> np.ndarray:
    return np.full(4, x, dtype=np.float32)


def test_a_hit_returns_the_stored_vector_and_a_miss_none():
    cache = QueryCache(2)
    assert cache.get("red shoes") is None
    cache.put("red shoes", _vec(1.0))
    np.testing.assert_array_equal(cache.get("red shoes"), _vec(1.0))
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 1, 1)


def test_the_least_recently_used_entry_is_evicted_first():
    cache = QueryCache(2)
    cache.put("a", _vec(1.0))
    cache.put("b", _vec(2.0))
    cache.get("a")  # "b" is now the least recently used
    cache.put("c", _vec(3.0))
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.stats().evictions == 1 and len(cache) == 2
    cache.put("a", _vec(9.0))  # a new vector for a known key replaces it without evicting
    np.testing.assert_array_equal(cache.get("a"), _vec(9.0))
    assert len(cache) == 2 and cache.stats().evictions == 1


def test_stored_vectors_are_copies_nobody_can_change():
    cache = QueryCache(1)
    original = _vec(1.0)
    cache.put("q", original)
    original[:] = 5.0  # the caller's array changes; the cached one does not
    hit = cache.get("q")
    np.testing.assert_array_equal(hit, _vec(1.0))
    with pytest.raises(ValueError):
        hit[0] = 7.0


def test_capacity_zero_keeps_nothing():
    cache = QueryCache(0)
    cache.put("q", _vec(1.0))
    assert not cache.enabled and cache.get("q") is None and len(cache) == 0


@pytest.mark.parametrize("capacity", [-1, 2.5, True, "10"])
def test_a_capacity_that_is_not_a_whole_number_at_least_zero_is_refused(capacity):
    with pytest.raises(ValueError, match="capacity"):
        QueryCache(capacity)


def test_many_threads_keep_the_cache_within_capacity_and_its_counts_exact():
    cache = QueryCache(8)
    wrong: list[str] = []

    def work(t: int) -> None:
        for i in range(500):
            key = f"q{(t * 7 + i) % 20}"
            hit = cache.get(key)
            if hit is None:
                cache.put(key, _vec(float(key[1:])))
            elif hit[0] != float(key[1:]):
                wrong.append(key)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert wrong == [] and stats.size == 8 and stats.hits + stats.misses == 8 * 500
    # each miss stored its key; all but 8 keys went out again (two threads missing one key store it once more)
    assert 0 < stats.evictions <= stats.misses - 8
