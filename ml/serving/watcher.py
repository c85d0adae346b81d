"""The watcher: keeps the champion loaded and hot-swaps it when the registry alias moves.

`ChampionWatcher` resolves `models:/<name>@champion` and loads that version (`ml.serving.champion.load_version`:
download, verify, load, index, warm up), and only then swaps it in: a single reference assignment under a
lock. A request takes `watcher.current()` once and uses that object to the end, so in-flight requests keep
the model they started with. A background thread polls the alias every `poll_seconds`; a version that fails
to load leaves the old champion serving, and the failure is kept in `last_error` (with `last_checked`) for
the authenticated /version. A changed tag on the same version (say, the re-ranking share) is picked up
without a reload.

A cold start whose champion cannot be loaded (or verified) does not leave shoppers with 503s: the watcher
serves the newest other version whose recorded gate decision allows serving (`gate.status` passed or
approved, the rule promotion applies) and that loads, says so (`status().fallback_for`, /version, the log),
and keeps trying the alias's version with the usual back-off, swapping to it once it loads. With nothing
loadable the service answers 503.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.registry.registration import CHAMPION, PROMOTABLE
from ml.serving.champion import Champion, ChampionLoadError, load_version, refuse_unvetted, rerank_settings
from ml.serving.runtime import settle_heap

log = logging.getLogger(__name__)


@dataclass
class WatchStatus:
    last_checked: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    swaps: int = 0
    failed_versions: dict[str, str] = field(default_factory=dict)  # version -> its last load error
    fallback_for: str | None = None  # the alias's version, while another one answers in its place


def fallback_order(versions: Sequence[tuple[str, Mapping[str, str]]], exclude: set[str]) -> list[str]:
    """The versions a cold start may serve instead of a champion that does not load: those whose recorded
    gate decision allows serving (`gate.status` in PROMOTABLE, as for promotion), newest first."""
    allowed = [v for v, tags in versions if tags.get("gate.status") in PROMOTABLE and v not in exclude]
    return sorted(allowed, key=lambda v: int(v) if v.isdigit() else -1, reverse=True)


@dataclass
class _Failure:
    attempts: int
    retry_at: float  # time.monotonic() after which the version is tried again


class ChampionWatcher:
    """Keeps the current champion loaded and swaps in a new one when the alias moves."""

    def __init__(
        self,
        settings: Settings,
        poll_seconds: float = 10,
        alias: str = CHAMPION,
        client: MlflowClient | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        self.settings = settings
        self.model_name = settings.model_name
        self.alias = alias
        self.poll_seconds = float(poll_seconds)
        self._client = client or MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll at a time (the thread, or a caller of poll_once)
        self._current: Champion | None = None
        self._status = WatchStatus()
        self._failures: dict[str, _Failure] = {}
        self.max_backoff_seconds = 600.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what requests read -------------------------------------------------------------------
    def current(self) -> Champion | None:
        """The champion to answer one request with: take it once, use it to the end."""
        with self._lock:
            return self._current

    def status(self) -> WatchStatus:
        with self._lock:
            return replace(self._status, failed_versions=dict(self._status.failed_versions))

    # ---- polling -------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """Check the alias once; load and swap if it moved. Returns True when the champion changed."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        now = datetime.now(UTC)
        try:
            mv = self._client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as err:
            self._record(now, f"cannot resolve models:/{self.model_name}@{self.alias}: {_short(err)}")
            return False
        except Exception as err:  # the registry is down: keep serving what we have
            self._record(now, f"registry unreachable ({type(err).__name__}): {_short(err)}")
            return False
        version, tags = str(mv.version), dict(mv.tags or {})
        current = self.current()
        if current is not None and current.version == version:
            if dict(current.tags) != tags:
                return self._retag(current, tags, now)
            self._record(now, None)
            return False
        where = f"{self.model_name} v{version}"
        failure = self._failures.get(version)
        if failure is not None and time.monotonic() < failure.retry_at:
            self._record(now, self.status().failed_versions.get(version))  # backing off: keep the error shown
            return False
        started = time.perf_counter()
        try:
            if self.alias == CHAMPION:
                refuse_unvetted(version, tags)
            champion = self._load(version, tags, mv.run_id)
        except Exception as err:
            attempts, backoff = self._back_off(version, failure)
            message = f"loading {where} failed ({type(err).__name__}): {_short(err)}"
            if current is None:  # a cold start: serve a vetted version rather than nothing
                fallback = self._load_fallback(exclude={version})
                if fallback is not None:
                    self._swap(fallback, now, fallback_for=version)
                    message += f"; serving v{fallback.version} instead, the newest gate-passed version that loads"
                else:
                    message += "; no champion loaded, and no other gate-passed version loads"
            else:
                message += f"; still serving v{current.version}"
            log.error("%s (attempt %d, next try in %.0f s)", message, attempts, backoff)
            self._record(now, message, failed_version=version)
            return current is None and self.current() is not None
        self._failures.pop(version, None)
        self._swap(champion, now)
        log.info(
            "champion is now %s (loaded and warmed in %.1f s; was %s)",
            where,
            time.perf_counter() - started,
            f"v{current.version}" if current else "none",
        )
        if current is not None:
            shutil.rmtree(current.folder, ignore_errors=True)  # requests in flight hold the loaded object
            current = None  # this poll's reference to the replaced champion, dropped before the collection
            settle_heap()  # reclaim the replaced champion, freeze the new one
        return True

    def _load_fallback(self, exclude: set[str]) -> Champion | None:
        """The newest version in `fallback_order` that loads (and verifies), or None. Versions that fail
        here are recorded in `failed_versions` and backed off like the alias's."""
        try:
            found = self._client.search_model_versions(f"name = '{self.model_name}'")
        except Exception as err:  # the registry is down: nothing to fall back to now
            log.error("cannot list the versions of %s to fall back to (%s)", self.model_name, type(err).__name__)
            return None
        runs = {str(mv.version): mv.run_id for mv in found}
        tags = {str(mv.version): dict(mv.tags or {}) for mv in found}
        for version in fallback_order(list(tags.items()), exclude):
            failure = self._failures.get(version)
            if failure is not None and time.monotonic() < failure.retry_at:
                continue
            try:
                return self._load(version, tags[version], runs[version])
            except Exception as err:
                self._back_off(version, failure)
                message = f"fallback {self.model_name} v{version} failed ({type(err).__name__}): {_short(err)}"
                log.error(message)
                with self._lock:
                    self._status.failed_versions[version] = message
        return None

    def _load(self, version: str, tags: dict[str, str], run_id: str | None) -> Champion:
        """Load and verify one version of the model (`load_version`), with this service's query encoder."""
        return load_version(
            self._client, self.model_name, version, tags, run_id=run_id, query_encoder=self.settings.query_encoder
        )

    def _back_off(self, version: str, failure: _Failure | None) -> tuple[int, float]:
        """Record one more failed load of `version` after `failure` (the last one, or None); returns the attempts
        so far and the seconds until the next try: the poll interval, doubled per attempt, at most
        max_backoff_seconds."""
        attempts = failure.attempts + 1 if failure else 1
        backoff = min(self.max_backoff_seconds, self.poll_seconds * 2 ** (attempts - 1))
        self._failures[version] = _Failure(attempts, time.monotonic() + backoff)
        return attempts, backoff

    def _retag(self, current: Champion, tags: dict[str, str], now: datetime) -> bool:
        where = f"{self.model_name} v{current.version}"
        try:
            rerank = rerank_settings(tags, current.recommender.item_ids, current.brands, where)
        except ChampionLoadError as err:
            self._record(
                now,
                f"new tags on {where} rejected: {err}; still serving its old tags",
                failed_version=current.version,
            )
            return False
        self._swap(replace(current, tags=tags, rerank=rerank), now)
        log.info("tags of %s changed; re-ranking share now %s", where, rerank.config.min_tail_share)
        return True

    def _swap(self, champion: Champion, now: datetime, fallback_for: str | None = None) -> None:
        with self._lock:
            self._current = champion  # the one reference assignment requests see
            self._status.last_checked = now
            self._status.last_error = None
            self._status.swaps += 1
            self._status.fallback_for = fallback_for

    def _record(self, now: datetime, error: str | None, failed_version: str | None = None) -> None:
        with self._lock:
            self._status.last_checked = now
            if error is not None:
                self._status.last_error = error
                self._status.last_error_at = now
            else:  # the alias points at the version we serve (again, e.g. after a rollback of a bad version)
                self._status.last_error = None
                self._status.fallback_for = None
            if failed_version is not None and error is not None:
                self._status.failed_versions[failed_version] = error

    # ---- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the champion now (if there is one), then poll in a daemon thread. Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("champion poll failed")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop polling and remove the current champion's download folder."""
        self.stop()
        current = self.current()
        if current is not None:
            shutil.rmtree(current.folder, ignore_errors=True)


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
