"""The PII scan of what a registered version releases: its parameters and tags, the model folder, the reports and
the feature files, against PII patterns and every raw shopper id of the source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ml.privacy.text_scan import PIIFinding

MAX_RECORDED = 50  # findings kept in the scan record (the count covers them all)


def scan_release(
    users: pd.DataFrame, events: pd.DataFrame, items: pd.DataFrame, texts: Mapping[str, str], paths: Sequence[Path]
) -> tuple[list[PIIFinding], dict[str, Any]]:
    """Findings in `texts` (name -> text) and under `paths`, and the record to log: the first MAX_RECORDED
    findings, their count and what was checked. Raw ids are the source's own (`users`, `events`); text the public
    catalogue also holds (`items`: model numbers and the like) is not a leak."""
    from ml.privacy.pii import PIIScrubber
    from ml.privacy.raw_ids import RawIdMatcher, catalogue_texts
    from ml.privacy.scan import scan_paths, scan_texts

    raw_ids = set(users["user_id"].dropna().astype(str)) | set(events["user_id"].dropna().astype(str))
    matcher = RawIdMatcher(raw_ids, public_texts=catalogue_texts(items))
    scrubber = PIIScrubber()
    findings = scan_texts(texts, scrubber, matcher) + scan_paths(paths, scrubber, matcher)
    record = {
        "findings": [f.__dict__ for f in findings[:MAX_RECORDED]],
        "count": len(findings),
        "checked": matcher.report(),
    }
    return findings, record
