"""Scan what a run would publish (params, tags, features, artifacts) for PII and for raw-id leaks.

Two kinds of finding:
- PII: whatever the PIIScrubber finds in text (e-mail, phone, card, ...), kind = the scrubber's kind;
- RAW_ID: one of the shoppers' raw ids. After ingestion only pseudonyms may appear anywhere.

The entry points are `scan_texts` (named texts: params, tags, feature values) and `scan_paths` (files and
folders). The parts:
- ``ml.privacy.raw_ids``: which raw ids are searched as tokens and which only as shopper-field values and
  mentions, and the matcher that finds them in text and bytes (`RawIdMatcher`, its `report()`);
- ``ml.privacy.text_scan``: text cut into bounded units, analyzed in batches, findings with redacted excerpts
  (an excerpt shows every finding in it as "<KIND>": never the PII itself);
- ``ml.privacy.scan_files`` and ``ml.privacy.html_text``: each file read by its kind (text, HTML, parquet,
  binary) with memory bounded by the chunk size whatever the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from ml.privacy.raw_ids import RawIdMatcher, is_shopper_field
from ml.privacy.scan_files import scan_file
from ml.privacy.text_scan import RAW_ID, PIIFinding, Scrubber, scan_units, string_units

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- public API
def scan_texts(
    texts: Mapping[str, str], scrubber: Scrubber, raw_ids: Collection[str] | RawIdMatcher
) -> list[PIIFinding]:
    """Findings in named texts (params, tags, feature values); a finding's location is the text's name."""
    matcher = raw_ids if isinstance(raw_ids, RawIdMatcher) else RawIdMatcher(raw_ids)
    units = (unit for name, value in texts.items() if value is not None for unit in string_units(str(value), str(name)))
    findings = list(scan_units(units, scrubber, matcher))
    seen = {f.location for f in findings if f.kind == RAW_ID}
    for name, value in texts.items():  # a shopper-named param or tag whose whole value is a raw id
        if value is not None and is_shopper_field(name) and name not in seen and matcher.is_field_id(value):
            findings.append(PIIFinding(str(name), RAW_ID, f"<{RAW_ID}> (the whole value)"))
    return findings


def scan_paths(paths: Iterable[Path], scrubber: Scrubber, raw_ids: Collection[str] | RawIdMatcher) -> list[PIIFinding]:
    """Findings in files, walking directories; every file gets at least the raw-id byte scan."""
    matcher = raw_ids if isinstance(raw_ids, RawIdMatcher) else RawIdMatcher(raw_ids)
    findings: list[PIIFinding] = []
    started = time.perf_counter()
    n_files = 0
    for file in _walk(paths):
        n_files += 1
        found = list(scan_file(file, scrubber, matcher))
        if found:
            log.warning("%d PII/raw-id finding(s) in %s", len(found), file)
        findings += found
    log.info("scanned %d file(s) in %.1f s: %d finding(s)", n_files, time.perf_counter() - started, len(findings))
    return findings


def _walk(paths: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"cannot scan {root}: it does not exist")
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                yield path
