"""The champion watcher's back-off: a version that fails to load is tried again after the poll interval,
doubled per failed attempt and capped, for the alias's version and the cold start's fallbacks alike."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ml.config import Settings
from ml.serving import watcher as watcher_module
from ml.serving.watcher import ChampionWatcher

PASSED = {"gate.status": "passed"}


class Registry:
    """The alias names v3; v2 is the other gate-passed version a cold start may fall back to."""

    def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
        return SimpleNamespace(version="3", tags=PASSED, run_id="r3")

    def search_model_versions(self, query: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(version=v, tags=PASSED, run_id=f"r{v}") for v in ("2", "3")]


@pytest.fixture
def world(vetted_home, monkeypatch, tmp_path):
    clock = SimpleNamespace(now=0.0, loads=[], loadable=set())

    def load_version(client, name, version, tags, run_id=None, query_encoder=None):
        clock.loads.append((version, run_id))
        if version not in clock.loadable:
            raise RuntimeError(f"v{version} does not verify")
        return SimpleNamespace(version=version, tags=tags, folder=tmp_path / f"v{version}")

    monkeypatch.setattr(watcher_module, "load_version", load_version)
    monkeypatch.setattr(watcher_module, "settle_heap", lambda: None)
    monkeypatch.setattr(
        watcher_module, "time", SimpleNamespace(monotonic=lambda: clock.now, perf_counter=lambda: clock.now)
    )
    watcher = ChampionWatcher(Settings.from_env(), poll_seconds=10, alias="candidate", client=Registry())
    watcher.max_backoff_seconds = 25.0
    return watcher, clock


def _poll_at(watcher: ChampionWatcher, clock: SimpleNamespace, now: float) -> list[str]:
    clock.now, before = now, len(clock.loads)
    watcher.poll_once()
    return [version for version, _ in clock.loads[before:]]


def test_failed_loads_wait_the_poll_interval_doubled_per_attempt_and_capped(world):
    watcher, clock = world
    assert _poll_at(watcher, clock, 0.0) == ["3", "2"]  # the alias's version, then the cold start's fallback
    assert clock.loads == [("3", "r3"), ("2", "r2")]
    assert set(watcher.status().failed_versions) == {"2", "3"}
    assert _poll_at(watcher, clock, 9.9) == []  # both wait 10 s after their first failure
    assert _poll_at(watcher, clock, 10.0) == ["3", "2"]
    assert _poll_at(watcher, clock, 29.9) == []  # then 20 s
    assert _poll_at(watcher, clock, 30.0) == ["3", "2"]
    assert _poll_at(watcher, clock, 54.9) == []  # then 40 s, capped at max_backoff_seconds (25 s)
    assert watcher.current() is None
    clock.loadable.add("3")
    assert _poll_at(watcher, clock, 55.0) == ["3"]
    assert watcher.current().version == "3" and watcher.status().swaps == 1


def test_a_fallback_that_loads_serves_while_the_alias_version_backs_off(world):
    watcher, clock = world
    clock.loadable.add("2")
    assert _poll_at(watcher, clock, 0.0) == ["3", "2"]
    assert watcher.current().version == "2" and watcher.status().fallback_for == "3"
    assert _poll_at(watcher, clock, 5.0) == []
    assert _poll_at(watcher, clock, 10.0) == ["3"]  # still failing: v2 keeps serving, no fallback search
    assert watcher.current().version == "2"
