"""The drift monitor's stage: newest events against the champion's training window (Evidently).

Called daily by the `drift_monitor` DAG; when the share of drifted columns passes the gate policy's
drift threshold, the DAG updates the drift asset and `recsys_training` runs on its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ml.config import Settings

log = logging.getLogger(__name__)


def drift_threshold(policy_path: str | None) -> float:
    """The drift check's threshold in the gate policy (the same number the gate warns at)."""
    from ml.gate.policy import load_policy

    for check in load_policy(policy_path or None).checks:
        if check.metric == "drift.share" and isinstance(check.threshold, (int, float)):
            return float(check.threshold)
    raise ValueError("the gate policy has no numeric drift.share check; add one or pass a threshold")


def check_drift(
    settings: Settings, policy_path: str | None = None, window_days: int = 7, threshold: float | None = None
) -> dict[str, Any]:
    """Compare the last `window_days` of lake events with the champion's training window."""
    from ml.data.ingest import read_lake
    from ml.evaluation.drift import drift_frames
    from ml.evaluation.reports import drift_report
    from ml.pipeline.registry_stages import registry_client
    from ml.registry.registration import CHAMPION, alias_version

    threshold = drift_threshold(policy_path) if threshold is None else threshold
    champ = alias_version(registry_client(settings), settings.model_name, CHAMPION)
    if champ is None:
        return {"status": "no_champion", "drifted": False, "threshold": threshold}
    window = champ.tags.get("data.window", "")
    start, _, end = window.partition(" .. ")
    if not end:
        raise ValueError(f"champion v{champ.version} has no usable data.window tag ({window!r})")
    tables = read_lake(settings.lake_dir)
    events, items = tables["events"], tables["items"]
    reference = events[(events["ts"] >= pd.Timestamp(start)) & (events["ts"] < pd.Timestamp(end))]
    newest = events["ts"].max()
    current = events[events["ts"] > newest - pd.Timedelta(days=window_days)]
    if reference.empty or current.empty:
        return {
            "status": "no_data",
            "drifted": False,
            "threshold": threshold,
            "reference_rows": len(reference),
            "current_rows": len(current),
        }
    out_dir = settings.home / "monitoring"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = drift_report(*drift_frames(reference, current, items), out_dir / f"drift-{stamp}.html")
    drifted = report["share_drifted"] > threshold
    result = {
        "status": "drifted" if drifted else "stable",
        "drifted": drifted,
        "threshold": threshold,
        "share": report["share_drifted"],
        "drifted_columns": report["drifted_columns"],
        "report": str(Path(report["path"])),
        "champion": str(champ.version),
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    log.info("drift check: %s", result)
    return result
