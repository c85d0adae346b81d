"""The orphan sweep: runs whose stage died without a word (SIGKILL, a lost machine) are ended, never left pending.

A run folder whose lease names a dead holder (`ml.pipeline.lease`) is an orphan. For each, the sweep
- marks every version registered from the run's MLflow runs `gate.status=failed` with the stage and the reason
  (`registration.mark_failed`, which also takes `champion` away if it had it);
- ends the run's MLflow runs that are still RUNNING, and its training run, as FAILED, tagged with the reason;
- writes an `orphan` event to the audit trail, and `orphan.json` in the run folder, then removes the lease.

Every step is idempotent, so a sweep that is itself interrupted is simply run again. `vetted run` sweeps before
it starts, the training DAG in its first task, and `vetted doctor` on demand. Live runs, and runs between
stages, hold no dead lease and are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.pipeline.lease import (
    LEASE_FILE,
    STALE_AFTER_S,
    Lease,
    dead_reason,
    process_start,
    read_lease,
    this_host,
)

log = logging.getLogger(__name__)

ORPHAN_TAG = "vetted.orphan"
ORPHAN_FILE = "orphan.json"


@dataclass
class Orphan:
    """One dead run folder and what the sweep did about it."""

    run_dir: Path
    stage: str
    reason: str
    runs_failed: list[str] = field(default_factory=list)
    versions_failed: list[str] = field(default_factory=list)


@dataclass
class SweepReport:
    orphans: list[Orphan] = field(default_factory=list)
    live: list[tuple[Path, Lease]] = field(default_factory=list)  # leases whose holder may be alive: left alone


def find_leases(
    settings: Settings, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S
) -> tuple[list[tuple[Path, Lease, str]], list[tuple[Path, Lease]]]:
    """(dead, live): every run folder holding a lease, split by whether its holder is dead (with why)."""
    now = now or datetime.now(UTC)
    host = this_host()
    dead, live = [], []
    for path in sorted(settings.runs_dir.glob(f"*/{LEASE_FILE}")):
        lease = read_lease(path.parent)
        if lease is None:  # released while we looked
            continue
        why = dead_reason(lease, now, host, process_start, stale_after_s)
        if why is None:
            live.append((path.parent, lease))
        else:
            dead.append((path.parent, lease, why))
    return dead, live


def _runs_of(client: MlflowClient, settings: Settings, run_dir: Path) -> list[str]:
    """The MLflow runs to end: this folder's RUNNING runs and the training run it recorded (`train.json`)."""
    import json

    from ml.registry.tracking import RUN_DIR_TAG

    ids: list[str] = []
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        running = client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        ids += [r.info.run_id for r in running if r.data.tags.get(RUN_DIR_TAG) == str(run_dir)]
    train = run_dir / "train.json"
    if train.exists():
        run_id = json.loads(train.read_text()).get("mlflow_run_id")
        if run_id and run_id not in ids:
            ids.append(run_id)
    return ids


def settle(client: MlflowClient, settings: Settings, run_dir: Path, lease: Lease, why: str, actor: str) -> Orphan:
    """Do what the dead stage could not: versions failed, runs FAILED, the audit event, the record."""
    import json

    from ml.registry import registration as reg
    from ml.registry.audit import append_event

    reason = (
        f"the {lease.stage} stage died ({why}; it held the run since {lease.since}); "
        f"found by the orphan sweep in {run_dir.name}"
    )
    orphan = Orphan(run_dir=run_dir, stage=lease.stage, reason=reason)
    for run_id in _runs_of(client, settings, run_dir):
        version = reg.version_for_run(client, settings.model_name, run_id)
        if version is not None and version.tags.get("gate.status") != "failed":
            reg.mark_failed(client, settings.model_name, str(version.version), lease.stage, reason, settings=settings)
            orphan.versions_failed.append(str(version.version))
        run = client.get_run(run_id)
        if run.info.status in ("RUNNING", "FINISHED", "SCHEDULED"):
            client.set_tag(run_id, ORPHAN_TAG, reason[:500])
            client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
            orphan.runs_failed.append(run_id)
    append_event(
        settings,
        "orphan",
        settings.model_name,
        ",".join(orphan.versions_failed) or None,
        actor,
        f"{reason}; versions failed: {orphan.versions_failed or 'none'}; "
        f"MLflow runs ended FAILED: {orphan.runs_failed or 'none'}",
    )
    (run_dir / ORPHAN_FILE).write_text(
        json.dumps(
            {
                **lease.__dict__,
                "reason": reason,
                "runs_failed": orphan.runs_failed,
                "versions_failed": orphan.versions_failed,
            },
            indent=2,
        )
    )
    (run_dir / LEASE_FILE).unlink(missing_ok=True)
    log.warning(
        "orphan %s: %s (versions failed %s, runs ended FAILED %s)",
        run_dir,
        reason,
        orphan.versions_failed,
        orphan.runs_failed,
    )
    return orphan


def sweep(
    settings: Settings, actor: str = "vetted sweep", dry_run: bool = False, stale_after_s: float = STALE_AFTER_S
) -> SweepReport:
    """Find run folders whose stage died and settle each (nothing is changed with `dry_run`)."""
    dead, live = find_leases(settings, stale_after_s=stale_after_s)
    report = SweepReport(live=live)
    if not dead:
        return report
    if dry_run:
        report.orphans = [Orphan(run_dir=d, stage=lease.stage, reason=why) for d, lease, why in dead]
        return report
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure

    configure(settings)
    client = make_client(settings)
    report.orphans = [settle(client, settings, d, lease, why, actor) for d, lease, why in dead]
    return report
