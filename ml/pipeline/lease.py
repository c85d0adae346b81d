"""Stage leases: which process works on a run folder right now, so a sweep can tell a dead run from a live one.

A stage that a SIGKILL (or a lost machine) stops runs no `finally`: the version it registered stays
`gate.status=pending` and its MLflow run may stay RUNNING. Run state alone cannot tell such an orphan from a
live run: under Airflow the MLflow run legitimately stays open between tasks, which are separate processes.
So each stage records a lease in its run folder (`lease.json`: stage, pid, host, the process's start time,
when) for as long as it works, and removes it when it ends, normally or by an exception. Between stages
there is no lease, and nothing to sweep. A lease left behind names its holder, and the holder is dead when:

- it ran on this host and its pid is gone, a zombie, or now a different process (the start time differs);
- it ran on another host (whose processes this one cannot see) and the lease is older than `STALE_AFTER_S`.

Two live runs hold leases in different run folders, each naming a live process, so neither sweeps the other.
The run folder sits on the volume every worker shares, like the rest of the run's state.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
# A lease from another host is only judged by its age. A day: far longer than any stage runs here (training
# is minutes to hours), so a slow live stage elsewhere is never swept; a dead one waits a day to be.
STALE_AFTER_S = 24 * 3600.0
# Test-only hold point: when this variable names a point (`register.version_created`), the stage blocks there
# so a crash test can SIGKILL it at a known place instead of guessing with sleeps.
HOLD_ENV = "VETTED_TEST_HOLD_AT"
_HOLD_LIMIT_S = 600.0


@dataclass(frozen=True)
class Lease:
    """Who holds a run folder: the stage, its process (pid, host, kernel start time) and since when (UTC)."""

    stage: str
    pid: int
    host: str
    process_start: str | None
    since: str
    token: str


def process_start(pid: int) -> str | None:
    """The kernel's start time of a live process (a pid reused later gets another), or None if it is dead.

    A zombie (killed, not yet reaped) counts as dead. Without /proc only "alive" ("?") or None is known."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
        return "?"
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else fields[19]


def this_host() -> str:
    return socket.gethostname()


def new_lease(stage: str) -> Lease:
    pid = os.getpid()
    return Lease(
        stage=stage,
        pid=pid,
        host=this_host(),
        process_start=process_start(pid),
        since=datetime.now(UTC).isoformat(timespec="seconds"),
        token=uuid.uuid4().hex,
    )


def read_lease(run_dir: Path) -> Lease | None:
    """The lease in `run_dir`, or None when no stage holds it. A lease file that cannot be read is an error."""
    path = Path(run_dir) / LEASE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    try:
        return Lease(**data)
    except TypeError as err:
        raise ValueError(f"{path} is not a stage lease ({err}): remove it if no stage of that run is working") from None


def _write(run_dir: Path, lease: Lease) -> None:
    path = Path(run_dir) / LEASE_FILE
    tmp = path.with_name(f".{LEASE_FILE}.{lease.token}")
    tmp.write_text(json.dumps(asdict(lease)))
    tmp.replace(path)  # atomic: a sweep never reads half a lease


def release(run_dir: Path, lease: Lease) -> None:
    """Remove the lease if it is still this one (a later holder's lease is left alone)."""
    try:
        current = read_lease(run_dir)
    except ValueError:
        return
    if current is not None and current.token == lease.token:
        (Path(run_dir) / LEASE_FILE).unlink(missing_ok=True)


@contextmanager
def stage_lease(run_dir: Path, stage: str) -> Iterator[Lease]:
    """Hold `run_dir`'s lease for `stage` while the block runs; release it however the block ends (bar SIGKILL).

    Re-entrant: inside a lease this process already holds (`vetted run` leases each stage, and the stages
    that touch the registry lease themselves too) the outer lease is kept as it is. A lease of another
    process is taken over: one run's stages run one at a time, so a new stage means the old holder is gone
    (a retried task)."""
    current = read_lease(run_dir)
    if current is not None and current.pid == os.getpid() and current.host == this_host():
        yield current
        return
    if current is not None:
        log.warning(
            "%s: taking over the lease of %s (pid %s on %s since %s)",
            run_dir,
            current.stage,
            current.pid,
            current.host,
            current.since,
        )
    lease = new_lease(stage)
    _write(run_dir, lease)
    try:
        yield lease
    finally:
        release(run_dir, lease)


def dead_reason(
    lease: Lease, now: datetime, host: str, start_of: Callable[[int], str | None], stale_after_s: float = STALE_AFTER_S
) -> str | None:
    """Why the lease's holder is dead, or None while it may be alive (the rule is in the module docstring)."""
    if lease.host == host:
        start = start_of(lease.pid)
        if start is None:
            return f"process {lease.pid} on {host} is gone"
        if lease.process_start not in (None, "?") and start not in ("?", lease.process_start):
            return f"process {lease.pid} on {host} is gone (the pid now belongs to another process)"
        return None
    age = (now - datetime.fromisoformat(lease.since)).total_seconds()
    if age > stale_after_s:
        return (
            f"its lease from {lease.host} (pid {lease.pid}) is {age / 3600:.1f} h old, past the "
            f"{stale_after_s / 3600:.1f} h limit for another host"
        )
    return None


def hold_for_tests(point: str) -> None:
    """Test-only: block at `point` while HOLD_ENV names it, so a crash test can SIGKILL the stage exactly here."""
    if os.environ.get(HOLD_ENV) != point:
        return
    log.warning("%s=%s: holding here for a crash test", HOLD_ENV, point)
    deadline = time.monotonic() + _HOLD_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
