"""The orphan sweep: a stage that a SIGKILL stopped leaves a lease naming a dead process; the sweep settles it.

These tests kill a real process that holds a real lease (no model is trained: the slow crash tests in
test_crash_safety.py kill `vetted run` itself); the MLflow run and version stand for what its stage made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml import cli
from ml.config import RunConfig, Settings
from ml.data.sources import SourceNotFoundError
from ml.pipeline import lease as leases
from ml.registry import registration as reg
from ml.registry.audit import read_events
from ml.registry.sweep import ORPHAN_FILE, sweep
from ml.registry.tracking import RUN_DIR_TAG, configure

ROOT = Path(__file__).resolve().parents[2]
_HOLDER = (
    "import sys, time\nfrom pathlib import Path\nfrom ml.pipeline.lease import stage_lease\n"
    "with stage_lease(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n"
)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _lease(**kw) -> leases.Lease:
    base = {
        "stage": "train",
        "pid": 4242,
        "host": "here",
        "process_start": "1000",
        "since": NOW.isoformat(),
        "token": "t",
    }
    return leases.Lease(**{**base, **kw})


def test_a_lease_on_this_host_is_dead_when_its_pid_is_gone_or_reused():
    assert leases.dead_reason(_lease(), NOW, "here", lambda pid: "1000") is None
    assert "is gone" in leases.dead_reason(_lease(), NOW, "here", lambda pid: None)
    assert "another process" in leases.dead_reason(_lease(), NOW, "here", lambda pid: "2000")


def test_a_lease_from_another_host_is_dead_only_past_the_staleness_limit():
    never = lambda pid: pytest.fail("another host's pid is not looked up here")  # noqa: E731
    fresh = _lease(host="worker-2", since=(NOW - timedelta(hours=23)).isoformat())
    stale = _lease(host="worker-2", since=(NOW - timedelta(hours=25)).isoformat())
    assert leases.dead_reason(fresh, NOW, "here", never) is None
    assert "25.0 h old" in leases.dead_reason(stale, NOW, "here", never)


def test_a_stage_lease_is_released_on_an_exception_nests_and_never_removes_a_later_holders_lease(tmp_path):
    with pytest.raises(RuntimeError), leases.stage_lease(tmp_path, "gate"):
        assert leases.read_lease(tmp_path).stage == "gate"
        raise RuntimeError("boom")
    assert leases.read_lease(tmp_path) is None
    with leases.stage_lease(tmp_path, "register") as outer:
        with leases.stage_lease(tmp_path, "register") as inner:
            assert inner == outer
        assert leases.read_lease(tmp_path) == outer  # the inner block kept the outer lease
        later = replace(outer, pid=outer.pid + 1, token="later")  # a retry took the run over
        leases._write(tmp_path, later)
    assert leases.read_lease(tmp_path) == later


def _hold(run_dir: Path, stage: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run_dir), stage],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "held", "the lease holder did not start"
    return proc


@pytest.fixture
def world(vetted_home):
    settings = Settings.from_env()
    experiment = configure(settings)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)

    def run_folder(name: str, stage: str, with_version: bool):
        """A run folder held by a live process, with a RUNNING MLflow run and maybe a pending version."""
        run_dir = settings.runs_dir / name
        run_dir.mkdir(parents=True)
        run = client.create_run(experiment, tags={RUN_DIR_TAG: str(run_dir)})
        version = None
        if with_version:
            version = str(
                reg.register(
                    client,
                    settings.model_name,
                    str(run_dir),
                    run.info.run_id,
                    {"gate.status": "pending"},
                    "Gate not run yet.",
                ).version
            )
        return run_dir, _hold(run_dir, stage), run.info.run_id, version

    yield settings, client, run_folder


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_two_live_runs_are_never_swept_and_a_killed_one_is_settled(world, capsys):
    settings, client, run_folder = world
    a_dir, a, a_run, a_version = run_folder("a", "register", with_version=True)
    b_dir, b, b_run, _ = run_folder("b", "train", with_version=False)
    try:
        report = sweep(settings)
        assert report.orphans == [] and sorted(d.name for d, _ in report.live) == ["a", "b"]
        assert client.get_run(a_run).info.status == "RUNNING"
        assert client.get_model_version(settings.model_name, a_version).tags["gate.status"] == "pending"

        _kill(a)
        assert cli.main(["doctor"]) == 0
        out = capsys.readouterr().out
        assert "Settled a: the register stage died" in out and f"v{a_version}" in out and "At work: b: train" in out
        tags = client.get_model_version(settings.model_name, a_version).tags
        assert (tags["gate.status"], tags[reg.FAILED_AT]) == ("failed", "register")
        assert f"process {a.pid}" in tags[reg.FAILURE_REASON] and "is gone" in tags[reg.FAILURE_REASON]
        assert client.get_run(a_run).info.status == "FAILED"
        assert client.get_run(b_run).info.status == "RUNNING"  # the live one, untouched
        event = read_events(settings)[-1]
        assert (event["event"], event["version"], event["actor"]) == ("orphan", a_version, "vetted doctor")
        assert leases.read_lease(a_dir) is None and (a_dir / ORPHAN_FILE).exists()
        assert sweep(settings).orphans == []  # settled once
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                _kill(proc)


def test_vetted_run_settles_dead_runs_before_it_starts(world):
    settings, client, run_folder = world
    run_dir, holder, run_id, _ = run_folder("killed-in-train", "train", with_version=False)
    _kill(holder)
    lines = []
    with pytest.raises(SourceNotFoundError):  # the new run itself stops at once: only the sweep matters here
        cli.run_chain(
            settings, RunConfig(source="coat", path=str(run_dir / "absent")), echo=lambda s, **_: lines.append(s)
        )
    assert lines[0].startswith("Settled a dead run first: killed-in-train: the train stage died")
    assert client.get_run(run_id).info.status == "FAILED"
    assert "train stage died" in client.get_run(run_id).data.tags["vetted.orphan"]
    assert read_events(settings)[-1]["event"] == "orphan"
    # the new run's folder holds no lease: its failed stage released it
    assert [p.parent.name for p in settings.runs_dir.glob(f"*/{leases.LEASE_FILE}")] == []
