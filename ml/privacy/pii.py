"""PII in free text: find it and replace it with typed placeholders such as "<EMAIL_ADDRESS>" (`PIIScrubber`).

Built on Presidio's pattern recognizers, run offline (``ml.privacy.pii_recognizers``). Caught: e-mail addresses,
phone numbers (national US/GB/DE/FR formats and any international "+CC"/"00CC" number), payment cards
(Luhn-checked), IBANs (checksum), IPv4/IPv6 addresses, US social security numbers, street addresses
(``ml.privacy.pii_kinds``). The scrubber blocks promotion when it finds anything in an artifact, so false
positives matter as much as misses: the guards that keep catalog text and metrics files clean, and the second
pass for numbers written back to back, are in ``ml.privacy.pii_guards``. Cheap gates decide which kinds a text
may hold before the analyzer is asked. benchmarks/results/robustness-ingest.md counts what reaches the lake.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import pandas as pd

from ml.privacy.pii_guards import formatted_findings, plausible, resolve_overlaps
from ml.privacy.pii_kinds import ADDRESS, CARD, EMAIL, IBAN, IP, KINDS, PHONE, SSN, Finding
from ml.privacy.pii_recognizers import build_analyzer

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

# minimum Presidio score per kind; validated kinds (e-mail, card, IBAN) score 1.0 when their check passes.
# US_SSN's "very weak" patterns (score 0.05: any 9 digits, ZIP+4) stay below 0.5 on purpose.
DEFAULT_THRESHOLDS: dict[str, float] = {
    EMAIL: 0.5,
    PHONE: 0.4,
    CARD: 0.5,
    IBAN: 0.5,
    IP: 0.5,
    SSN: 0.5,
    ADDRESS: 0.5,
}
# a text that holds none of these cannot hold any supported PII (all kinds need a digit, except an e-mail's
# "@" and the letters-only IPv6 forms with "::")
_MAY_HOLD_PII = re.compile(r"[0-9@]|::")
# per kind, a cheap regex that every match of that kind's recognizer (at any threshold) also matches: a kind
# whose gate does not match is not asked for, which spares the expensive phone matcher most texts
_GATES: dict[str, re.Pattern[str]] = {
    EMAIL: re.compile(r"@"),
    PHONE: re.compile(r"\d(?:[\s().\-/]{0,3}\d){6}"),
    CARD: re.compile(r"(?:\d[- ]?){12}\d"),
    IBAN: re.compile(r"[A-Za-z]{2}\d{2}"),
    IP: re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:|::"),
    SSN: re.compile(r"\d{3}[- .]?\d{2}[- .]?\d{4}|\d{5}-\d{4}|\d{3}-\d{6}"),
    ADDRESS: re.compile(r"\d"),
}

# joins the lines of one group for a single analyzer call; no gate or recognizer matches across it
_LINE_SEP = "\n;;;;\n"


def _kinds_in(text: str) -> tuple[str, ...]:
    """The kinds whose gate matches: the only ones a recognizer could find in `text`."""
    return tuple(kind for kind in KINDS if _GATES[kind].search(text))


def may_hold_pii(text: str) -> bool:
    """Cheap pre-filter: False means no supported recognizer could match `text`."""
    return bool(_MAY_HOLD_PII.search(text))


# an id (item_id, event_id) is a key, not text: it is only analyzed when it has the shape some PII needs (an "@",
# "::", a "+" before a digit, three groups of digits, a run of 9+ digits, two letters and two digits as an IBAN
# starts), so plain keys such as "e0001234", "A6424-12" or "c001" never reach the analyzer
_ID_GATE = re.compile(r"@|::|\+\d|\d{1,4}[^\w]{1,3}\d{1,4}[^\w]{1,3}\d|\d{9}|[A-Za-z]{2}\d{2}[A-Za-z0-9]{8}")


def id_may_hold_pii(value: str) -> bool:
    """Cheap pre-filter for keys: False means the key has none of the shapes PII in a key would have."""
    return bool(_ID_GATE.search(value))


class PIIScrubber:
    """Finds and replaces PII; the Presidio engine is built on first use, once per instance.

    `thresholds` overrides the minimum score per kind (see DEFAULT_THRESHOLDS).
    """

    def __init__(self, thresholds: dict[str, float] | None = None) -> None:
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        unknown = sorted(set(self.thresholds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kind(s) in thresholds: {unknown}; known: {list(KINDS)}")
        self._analyzer: AnalyzerEngine | None = None

    def __repr__(self) -> str:
        return f"PIIScrubber(kinds={list(KINDS)}, engine={'built' if self._analyzer else 'not built'})"

    @property
    def analyzer(self) -> AnalyzerEngine:
        if self._analyzer is None:
            self._analyzer = build_analyzer()
        return self._analyzer

    def find(self, text: str) -> list[Finding]:
        """Every PII finding in `text`, non-overlapping, in text order.

        A text of several lines is analyzed line by line, lines grouped by the kinds they may hold: the costly
        phone matcher then reads only the lines that have seven digits close together.
        """
        if not text or not may_hold_pii(text):
            return []
        if "\n" in text:
            candidates = self._analyze_by_line(text)
        else:
            candidates = self._analyze(text, _kinds_in(text))
        findings = [f for f in candidates if f.score >= self.thresholds.get(f.kind, 1.1)]
        findings = [f for f in findings if plausible(f.kind, text, f.start, f.end)]
        return resolve_overlaps(findings + formatted_findings(text))

    def _analyze(self, text: str, kinds: tuple[str, ...]) -> list[Finding]:
        if not kinds:
            return []
        results = self.analyzer.analyze(text=text, language="en", entities=list(kinds), score_threshold=0.0)
        return [Finding(r.entity_type, r.start, r.end, float(r.score)) for r in results]

    def _analyze_by_line(self, text: str) -> list[Finding]:
        groups: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        pos = 0
        for line in text.split("\n"):
            if may_hold_pii(line):
                kinds = _kinds_in(line)
                if kinds:
                    groups.setdefault(kinds, []).append((pos, line))
            pos += len(line) + 1
        found: list[Finding] = []
        for kinds, lines in groups.items():
            starts = list(itertools.accumulate((len(line) + len(_LINE_SEP) for _, line in lines[:-1]), initial=0))
            joined = _LINE_SEP.join(line for _, line in lines)
            for f in self._analyze(joined, kinds):
                k = bisect.bisect_right(starts, f.start) - 1
                offset, line = lines[k]
                start, end = f.start - starts[k], f.end - starts[k]
                if end <= len(line):  # a match reaching into the separator spans two lines: not one piece of PII
                    found.append(Finding(f.kind, offset + start, offset + end, f.score))
        return found

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with each finding replaced by "<KIND>", and the count of replacements per kind."""
        findings = self.find(text)
        counts: Counter[str] = Counter(f.kind for f in findings)
        if not findings:
            return text, counts
        parts: list[str] = []
        cursor = 0
        for f in findings:
            parts.append(text[cursor : f.start])
            parts.append(f"<{f.kind}>")
            cursor = f.end
        parts.append(text[cursor:])
        return "".join(parts), counts

    def kinds_in_ids(self, ids: pd.Series) -> pd.Series:
        """Per key, the PII kinds it holds joined by "," ("" for none): a key holding PII cannot be scrubbed
        (two keys could become one), so ingestion quarantines its row instead."""
        cache: dict[str, str] = {}

        def kinds(value: object) -> str:
            if not isinstance(value, str) or not id_may_hold_pii(value):
                return ""
            if value not in cache:
                cache[value] = ",".join(sorted({f.kind for f in self.find(value)}))
            return cache[value]

        return ids.map(kinds).astype(object)

    def scrub_series(self, s: pd.Series) -> tuple[pd.Series, Counter[str]]:
        """Scrub every text of a column (None/NaN stay as they are); each distinct text is analyzed once."""
        counts: Counter[str] = Counter()
        cache: dict[str, tuple[str, Counter[str]]] = {}
        out: list[Any] = []
        for value in s.tolist():
            if not isinstance(value, str):
                out.append(value)
                continue
            hit = cache.get(value)
            if hit is None:
                hit = cache[value] = self.scrub(value)
            out.append(hit[0])
            counts.update(hit[1])
        dtype = s.dtype if isinstance(s.dtype, pd.StringDtype) else object
        return pd.Series(out, index=s.index, dtype=dtype, name=s.name), counts
