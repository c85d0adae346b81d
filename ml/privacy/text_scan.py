"""Units of text and their analysis: PII by the scrubber, raw ids by the matcher, redacted excerpts.

A text is cut into units: windows of whole lines, a line longer than a window into overlapping pieces (each
finding belongs to the one piece where it starts); small units are joined into one analyzer call per batch.
A value that is one whole catalogue text (a title, a brand) is public: the PII analyzer is not run on it.
A finding's excerpt shows the context with every finding in it replaced by "<KIND>": never the PII itself.
Every reader (``ml.privacy.scan_files``, ``ml.privacy.html_text``) cuts its text with `text_units` and
`string_units` and analyzes it with `scan_units`.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ml.privacy.pii import may_hold_pii
from ml.privacy.pii_kinds import Finding
from ml.privacy.raw_ids import RawIdMatcher

RAW_ID = "RAW_ID"
WINDOW_CHARS = 64 * 1024  # text is analyzed in windows of about this size
OVERLAP_CHARS = 1024  # pieces of one long line overlap by this much (a finding is shorter than half)
BATCH_CHARS = 32 * 1024  # small texts are joined into batches of this size for one analyzer call
EXCERPT_CONTEXT = 40


class Scrubber(Protocol):
    def find(self, text: str) -> list[Finding]: ...


@dataclass(frozen=True)
class PIIFinding:
    """One finding: where (a mapping key, "file:line", "file:column[row]" or "file@byte"), what, redacted context."""

    location: str
    kind: str
    excerpt: str


# --------------------------------------------------------------------------------------------- units of text
@dataclass(frozen=True)
class Unit:
    """A piece of text to analyze; `locate(offset)` names where an offset in it is; findings count only when
    they start in [accept_from, accept_to) (pieces of one long line overlap, each finding belongs to one)."""

    text: str
    locate: Callable[[int], str]
    accept_from: int = 0
    accept_to: int | None = None

    def accepts(self, start: int) -> bool:
        return start >= self.accept_from and (self.accept_to is None or start < self.accept_to)


def fixed_location(location: str) -> Callable[[int], str]:
    return lambda _offset: location


def _by_line(prefix: str, first_line: int, text: str) -> Callable[[int], str]:
    if not prefix:
        return fixed_location("")
    return lambda offset: f"{prefix}:{first_line + text.count(chr(10), 0, offset)}"


def text_units(read: Callable[[int], str], prefix: str, first_line: int = 1, by_line: bool = True) -> Iterator[Unit]:
    """Cut a stream of text into windows of whole lines; a line longer than a window is cut into overlapping
    pieces. Memory: about two windows."""
    half = OVERLAP_CHARS // 2
    buf = ""
    line = first_line
    continued = False  # buf starts with the overlap of the previous piece of a long line

    def unit(text: str, start_line: int, accept_to: int | None) -> Unit:
        locate = _by_line(prefix, start_line, text) if by_line else fixed_location(prefix)
        return Unit(text, locate, half if continued else 0, accept_to)

    while True:
        chunk = read(WINDOW_CHARS)
        buf += chunk
        if not chunk:
            if buf:
                yield unit(buf, line, None)
            return
        newline = buf.rfind("\n")
        if newline >= 0:
            head, buf = buf[: newline + 1], buf[newline + 1 :]
            yield unit(head, line, None)
            line += head.count("\n")
            continued = False
        elif len(buf) > WINDOW_CHARS:
            yield unit(buf, line, len(buf) - half)
            buf = buf[len(buf) - OVERLAP_CHARS :]
            continued = True


def string_units(text: str, location: str) -> Iterator[Unit]:
    if len(text) <= WINDOW_CHARS:
        yield Unit(text, fixed_location(location))
    else:
        yield from text_units(io.StringIO(text).read, location, by_line=False)


# --------------------------------------------------------------------------------------------- analysis
def _merge_spans(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, kind))
    return merged


def _excerpt(text: str, target: tuple[int, int, str], spans: list[tuple[int, int, str]]) -> str:
    """Context around `target` with every span in it replaced by its placeholder."""
    start, end, _ = target
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    lo = max(line_start, start - EXCERPT_CONTEXT)
    hi = min(line_end, end + EXCERPT_CONTEXT)
    for s, e, _ in spans:  # never cut a finding in half: a half e-mail is still most of an e-mail
        if s < hi and e > lo:
            lo, hi = min(lo, s), max(hi, e)
    parts: list[str] = []
    cursor = lo
    for s, e, kind in _merge_spans([sp for sp in spans if sp[0] < hi and sp[1] > lo]):
        parts.append(text[cursor:s])
        parts.append(f"<{kind}>")
        cursor = e
    parts.append(text[cursor:hi])
    body = " ".join("".join(parts).split())
    return ("..." if lo > line_start else "") + body + ("..." if hi < line_end else "")


def _findings_for_unit(unit: Unit, pii: list[tuple[int, int, str]], raw: list[tuple[int, int]]) -> Iterator[PIIFinding]:
    spans = pii + [(s, e, RAW_ID) for s, e in raw]
    for span in sorted(spans):
        if unit.accepts(span[0]):
            yield PIIFinding(unit.locate(span[0]), span[2], _excerpt(unit.text, span, spans))


def scan_units(
    units: Iterable[Unit], scrubber: Scrubber, matcher: RawIdMatcher, mentions: bool = True
) -> Iterator[PIIFinding]:
    """Analyze units, joining small ones into one analyzer call per batch; `mentions=False` skips the
    shopper-name mention rule (a tokenizer's vocabulary, see scan_files.TOKENIZER_VOCABULARIES)."""
    batch: list[tuple[Unit, list[tuple[int, int]]]] = []
    size = 0

    def flush() -> Iterator[PIIFinding]:
        sep = "\n\n"
        starts: list[int] = []
        pos = 0
        for unit, _ in batch:
            starts.append(pos)
            pos += len(unit.text) + len(sep)
        joined = sep.join(unit.text for unit, _ in batch)
        per_unit: list[list[tuple[int, int, str]]] = [[] for _ in batch]
        for f in scrubber.find(joined):
            if "\n" in joined[f.start : f.end]:
                continue  # spans lines or units: numbers in consecutive lines are not one phone number
            k = bisect.bisect_right(starts, f.start) - 1
            per_unit[k].append((f.start - starts[k], f.end - starts[k], f.kind))
        for (unit, raw), pii in zip(batch, per_unit, strict=True):
            yield from _findings_for_unit(unit, pii, raw)

    for unit in units:
        raw = sorted(set(matcher.find(unit.text)) | set(matcher.find_mentions(unit.text) if mentions else ()))
        if not may_hold_pii(unit.text) or matcher.is_public_text(unit.text):
            yield from _findings_for_unit(unit, [], raw)
            continue
        batch.append((unit, raw))
        size += len(unit.text)
        if size >= BATCH_CHARS:
            yield from flush()
            batch, size = [], 0
    if batch:
        yield from flush()
