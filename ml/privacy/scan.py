"""Scan what a run would publish (params, tags, features, artifacts) for PII and for raw-id leaks.

Two kinds of finding:
- PII: whatever the PIIScrubber finds in text (e-mail, phone, card, ...), kind = the scrubber's kind;
- RAW_ID: one of the shoppers' raw ids. After ingestion only pseudonyms may appear anywhere.

Raw ids are checked in one of two ways, by how well they can be told apart from other text:
- "token" ids (4+ characters, not only digits, and not a word of the public catalogue text) are searched as
  whole tokens (not glued to letters, digits or "_") in all text; in binary files, ids of 8+ bytes as whole
  tokens and shorter ones where stored as strings (quoted or pickled), since 5 letters turn up by chance in
  megabytes of weights.
- "shopper-field" ids: shorter ones ("A7"), numbers of under 12 digits ("4521": counts, indices and item ids
  look the same) and ids that are also words of the catalogue's titles, descriptions, brands or item ids
  ("A276" in "ASTM A276": public item text, not a leak) are checked only where shopper data flows: as the
  whole value of a shopper field (a parquet or CSV column, JSON key, param or tag named for shoppers: user,
  shopper, customer, ...) and as the token right after such a name in text ("user A276", "user_id=A276",
  '"customer": "A276"'). Searched everywhere, they would flag every artifact holding item text or numbers.
A value that is one whole catalogue text (a title, a brand) is public: the PII analyzer is not run on it.
`RawIdMatcher.report()` counts the ids checked each way and the shopper fields and mentions checked.

Files are read by type: text-like files line by line in bounded windows; parquet by string column and row
batch; HTML by its visible text and its JSON data payloads (an Evidently report embeds a multi-megabyte
JavaScript bundle whose code is library code, not data, and is skipped); binary files (weights, indexes,
pickles) only for raw ids, in overlapping chunks. Memory stays bounded by the chunk size whatever the file.
A finding's excerpt shows the context with every finding in it replaced by "<KIND>": never the PII itself.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ml.privacy.pii import Finding, may_hold_pii

log = logging.getLogger(__name__)

RAW_ID = "RAW_ID"
MIN_RAW_ID_CHARS = 4  # shorter ids ("42") cannot be told apart from ordinary numbers and words
WINDOW_CHARS = 64 * 1024  # text is analyzed in windows of about this size
OVERLAP_CHARS = 1024  # pieces of one long line overlap by this much (a finding is shorter than half)
BATCH_CHARS = 32 * 1024  # small texts are joined into batches of this size for one analyzer call
BINARY_CHUNK = 4 * 1024 * 1024
EXCERPT_CONTEXT = 40
BINARY_FREE_BYTES = 8  # in binary files, a shorter raw id counts only when stored as a string (find_bytes)
PARQUET_BATCH_ROWS = 8192

TEXT_SUFFIXES = frozenset(
    ".json .jsonl .ndjson .csv .tsv .txt .md .yaml .yml .py .toml .cfg .ini .log .mlmodel .xml .sql".split()
)
TEXT_NAMES = frozenset({"MLmodel", "mlmodel", "Dockerfile", "LICENSE", "README"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
BINARY_SUFFIXES = frozenset(
    ".safetensors .pt .pth .bin .npy .npz .faiss .index .pkl .pickle .onnx .ckpt .h5 .db .sqlite .joblib".split()
)


class Scrubber(Protocol):
    def find(self, text: str) -> list[Finding]: ...


@dataclass(frozen=True)
class PIIFinding:
    """One finding: where (a mapping key, "file:line", "file:column[row]" or "file@byte"), what, redacted context."""

    location: str
    kind: str
    excerpt: str


# --------------------------------------------------------------------------------------------- raw ids
MAX_PREFIXES = 5000  # ids with punctuation inside ("shopper-00042") are found from their first word
MIN_TOKEN_DIGITS = 12  # all-digit ids shorter than this look like counts, indices, timestamps and item ids
# a name that says a field holds shoppers: user, user_id, userId, shopper-ids, customer, reviewer, ...
SHOPPER_NAME = r"(?:user|shopper|customer|reviewer|buyer|member|client|visitor|account|person)(?:[ _-]?ids?)?"
_SHOPPER_FIELD = re.compile(rf"(?:raw[ _-]?)?{SHOPPER_NAME}s?", re.IGNORECASE)
# a shopper name, then up to 5 separator characters (quotes, ":", "=", spaces), then the value
_SHOPPER_MENTION = re.compile(
    rf"(?<![A-Za-z0-9_]){SHOPPER_NAME}s?(?![A-Za-z0-9_])[\"'\s:=]{{1,5}}([^\s\"'<>,;:=(){{}}\[\]]+)", re.IGNORECASE
)


def is_shopper_field(name: str) -> bool:
    """Whether a column, key, param or tag name says it holds shoppers: its last part ("tag:data.user_id" ->
    "user_id") is a shopper name ("user_id", "userId", "shopper", "raw_customer_ids"); "n_users" is a count."""
    last = re.split(r"[:./]", str(name).strip().strip("\"'"))[-1]
    return bool(_SHOPPER_FIELD.fullmatch(re.sub(r"(?<=[a-z])(?=[A-Z])", "_", last)))  # userId -> user_Id


class _WholeTokens:
    """Finds any of a set of ids in a text (str) or in bytes where it is not glued to a word character.

    For bytes (`binary=True`) ids are given as latin-1 strings (one character per byte, from their UTF-8) and
    word characters are [A-Za-z0-9_]. Ids made of one word are found by one pass over the maximal word runs;
    ids with punctuation inside by a pass over their first words; ids starting or ending with punctuation by
    substring search. No pattern starts with a look-behind: those are searched much slower.
    """

    def __init__(self, ids: Collection[str], binary: bool) -> None:
        flags = 0 if binary else re.UNICODE

        def compile_(pattern: str) -> re.Pattern[Any]:
            return re.compile(pattern.encode("latin-1") if binary else pattern, flags)

        def as_key(value: str) -> Any:
            return value.encode("latin-1") if binary else value

        word, run = (
            re.compile(r"\w", re.ASCII if binary else 0),
            re.compile(r"\w+", re.ASCII if binary else 0),
        )
        self._word = compile_(r"\w")
        self._run = compile_(r"\w+")
        self.ids = frozenset(as_key(i) for i in ids)
        regular = {i for i in ids if word.match(i[0]) and word.match(i[-1])}
        self._odd = sorted(as_key(i) for i in set(ids) - regular)
        single = {i for i in regular if run.fullmatch(i)}
        multi = regular - single
        self._single = compile_(rf"\w{{{min(map(len, single))},}}") if single else None
        self._single_max = max(map(len, single), default=0)
        self._multi_lengths = sorted({len(i) for i in multi})
        self._multi_parts = max((len(run.findall(i)) for i in multi), default=0)
        firsts = {m.group() for i in multi if (m := run.match(i))}
        self._first = None
        if firsts and len(firsts) <= MAX_PREFIXES:
            alternatives = "|".join(re.escape(f) for f in sorted(firsts, key=len, reverse=True))
            self._first = compile_(rf"(?:{alternatives})(?!\w)")

    def _boundary(self, text: Any, k: int) -> bool:
        return k < 0 or k >= len(text) or not self._word.match(text, k)

    def find(self, text: Any) -> set[tuple[int, int]]:
        spans: set[tuple[int, int]] = set()
        if not self.ids or not text:
            return spans
        if self._single is not None:  # maximal runs of word characters: whole tokens by construction
            for m in self._single.finditer(text):
                if m.end() - m.start() <= self._single_max and m.group() in self.ids:
                    spans.add(m.span())
        if self._first is not None:
            for m in self._first.finditer(text):
                if not self._boundary(text, m.start() - 1):
                    continue
                for size in self._multi_lengths:
                    end = m.start() + size
                    if text[m.start() : end] in self.ids and self._boundary(text, end):
                        spans.add((m.start(), end))
        elif self._multi_parts:
            words = [m.span() for m in self._run.finditer(text)]
            for i, (start, _) in enumerate(words):
                for j in range(i + 1, min(i + self._multi_parts, len(words))):
                    if text[start : words[j][1]] in self.ids:
                        spans.add((start, words[j][1]))
        for raw in self._odd:
            k = text.find(raw)
            while k != -1:
                if self._boundary(text, k - 1) and self._boundary(text, k + len(raw)):
                    spans.add((k, k + len(raw)))
                k = text.find(raw, k + 1)
        return spans


class RawIdMatcher:
    """Finds raw ids: as whole tokens in text and bytes (token ids), and as values of shopper fields (all ids).

    `public_texts` (the catalogue's item ids, titles, descriptions, brands): ids that are also words there
    ("A312", a steel standard) are checked as shopper-field values only, like short and numeric ids (module
    docstring). `report()` says how many ids were checked which way, and how many shopper values were compared.
    """

    def __init__(
        self, raw_ids: Collection[str], min_chars: int = MIN_RAW_ID_CHARS, public_texts: Iterable[str] = ()
    ) -> None:
        ids = {str(i).strip() for i in raw_ids if i is not None and str(i).strip() and "\n" not in str(i)}
        numeric = {i for i in ids if i.isdigit() and len(i) < MIN_TOKEN_DIGITS}
        short = {i for i in ids - numeric if len(i) < min_chars}
        kept = ids - numeric - short
        public: set[str] = set()
        self._public_texts: set[str] = set()
        finder = _WholeTokens(kept, binary=False)
        for text in public_texts:
            self._public_texts.add(str(text))
            public.update(text[s:e] for s, e in finder.find(str(text)))
        n_public_texts = len(self._public_texts)
        kept -= public
        self.reasons = {f"shorter_than_{min_chars}_chars": len(short),
                        f"digits_only_under_{MIN_TOKEN_DIGITS}": len(numeric),
                        "words_of_the_catalogue_text": len(public)}
        self.n_public_texts = n_public_texts
        self._ids = frozenset(kept)
        self._field_ids = frozenset(ids)
        self.checked = {"shopper_values": 0, "shopper_mentions": 0, "catalogue_values": 0}
        weak = len(ids) - len(kept)
        if weak:
            log.info(
                "%d of %d raw id(s) are checked only as shopper-field values and mentions (%s; e.g. %s): as "
                "tokens anywhere they would match item text and numbers",
                weak, len(ids), ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.reasons.items() if v),
                ", ".join(sorted(public)[:3] or sorted(ids - kept)[:3]),
            )
        self.max_chars = max((len(i) for i in kept), default=0)
        self.has_numeric = any(i.isdigit() for i in kept)
        self._text = _WholeTokens(kept, binary=False)
        # bytes are read as latin-1; ids shorter than BINARY_FREE_BYTES count only where stored as strings
        encoded = {i.encode("utf-8") for i in kept}
        self._all_b = frozenset(encoded)
        self._bin = _WholeTokens(
            {e.decode("latin-1") for e in encoded if len(e) >= BINARY_FREE_BYTES}, binary=True
        )
        lengths = [len(e) for e in encoded] or [0]
        self._framings = _framing_prefixes(lengths)
        self._quoted = (
            re.compile(rb"([\"'])([^\"'\x00-\x1f]{%d,%d})\1" % (min(lengths), max(lengths)))
            if encoded
            else None
        )

    @property
    def skipped(self) -> int:
        """Ids not searched as tokens (checked as shopper-field values and mentions only)."""
        return len(self._field_ids) - len(self._ids)

    def report(self) -> dict[str, Any]:
        """What was checked how: for the scan's record (pii_scan.json) and the log."""
        return {
            "raw_ids": len(self._field_ids),
            "searched_as_tokens": len(self._ids),
            "checked_as_shopper_fields_only": self.skipped,
            "why_shopper_fields_only": dict(self.reasons),
            "catalogue_texts_read": self.n_public_texts,
            "shopper_values_compared": self.checked["shopper_values"],
            "shopper_mentions_read": self.checked["shopper_mentions"],
            "catalogue_values_not_analyzed_for_pii": self.checked["catalogue_values"],
        }

    def is_public_text(self, text: str) -> bool:
        """Whether `text` is one whole catalogue text (a title, a brand): public item text, which the PII
        analyzer is not run on ("XBOX 360 Slim" is no street address); raw ids are still checked in it."""
        if text in self._public_texts:
            self.checked["catalogue_values"] += 1
            return True
        return False

    def is_field_id(self, value: object) -> bool:
        """Whether `value`, a whole shopper-field value, is a raw id (any raw id: short and numeric ones too)."""
        self.checked["shopper_values"] += 1
        return str(value).strip() in self._field_ids

    def find_mentions(self, text: str) -> list[tuple[int, int]]:
        """Spans of raw ids right after a shopper name in `text` ("user A276", "user_id=42"): the ids that
        `find` does not search (token ids are found there already)."""
        if len(self._field_ids) == len(self._ids) or not text:
            return []
        spans = []
        for m in _SHOPPER_MENTION.finditer(text):
            self.checked["shopper_mentions"] += 1
            start, end = m.span(1)
            while end > start and text[end - 1] in ".!?":
                end -= 1
            value = text[start:end]
            if value in self._field_ids and value not in self._ids:
                spans.append((start, end))
        return spans

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __contains__(self, value: object) -> bool:
        return value in self._ids

    def find(self, text: str) -> list[tuple[int, int]]:
        """Spans of raw ids in `text`."""
        return sorted(self._text.find(text))

    def find_bytes(self, data: bytes) -> list[tuple[int, int]]:
        """Spans of raw ids (UTF-8) in `data`: ids of BINARY_FREE_BYTES or more as whole tokens anywhere, and
        ids of any length stored as strings (quoted, or after a pickle string opcode and its length byte(s)).

        Short ids ("A4042") turn up by chance in megabytes of weights; stored as a string they do not. A pickled
        string is followed by the next opcode, often a letter ("A4042q"), so framing and not word boundaries
        delimits it."""
        if not self._ids or not data:
            return []
        spans = self._bin.find(data)
        for prefix, size in self._framings:
            k = data.find(prefix)
            while k != -1:
                start = k + len(prefix)
                if data[start : start + size] in self._all_b:
                    spans.add((start, start + size))
                k = data.find(prefix, k + 1)
        if self._quoted is not None:
            for m in self._quoted.finditer(data):
                if m.group(2) in self._all_b:
                    spans.add(m.span(2))
        return sorted(spans)


CATALOGUE_COLUMNS = ("item_id", "title", "description", "brand", "category")


def catalogue_texts(items: Any) -> Iterator[str]:
    """The public text of a catalogue (a data frame of the items table): every non-empty item id, title,
    description, brand and category, for `RawIdMatcher(public_texts=...)`."""
    for column in CATALOGUE_COLUMNS:
        if column in items:
            for value in items[column].dropna().astype(str):
                if value:
                    yield value


def _framing_prefixes(lengths: Collection[int]) -> list[tuple[bytes, int]]:
    """The bytes in front of a pickled str/bytes of each length: SHORT_BINUNICODE or SHORT_BINSTRING + 1-byte
    length, or BINUNICODE, BINSTRING or BINBYTES + 4-byte little-endian length (ids are shorter than 256 bytes)."""
    return [
        (bytes([opcode]) + size.to_bytes(width, "little"), size)
        for size in sorted(set(lengths))
        if 0 < size < 256
        for opcodes, width in ((b"\x8cU", 1), (b"XTB", 4))
        for opcode in opcodes
    ]


# --------------------------------------------------------------------------------------------- units of text
@dataclass(frozen=True)
class _Unit:
    """A piece of text to analyze; `locate(offset)` names where an offset in it is; findings count only when
    they start in [accept_from, accept_to) (pieces of one long line overlap, each finding belongs to one)."""

    text: str
    locate: Callable[[int], str]
    accept_from: int = 0
    accept_to: int | None = None

    def accepts(self, start: int) -> bool:
        return start >= self.accept_from and (self.accept_to is None or start < self.accept_to)


def _fixed(location: str) -> Callable[[int], str]:
    return lambda _offset: location


def _by_line(prefix: str, first_line: int, text: str) -> Callable[[int], str]:
    if not prefix:
        return _fixed("")
    return lambda offset: f"{prefix}:{first_line + text.count(chr(10), 0, offset)}"


def _text_units(
    read: Callable[[int], str], prefix: str, first_line: int = 1, by_line: bool = True
) -> Iterator[_Unit]:
    """Cut a stream of text into windows of whole lines; a line longer than a window is cut into overlapping
    pieces. Memory: about two windows."""
    half = OVERLAP_CHARS // 2
    buf = ""
    line = first_line
    continued = False  # buf starts with the overlap of the previous piece of a long line

    def unit(text: str, start_line: int, accept_to: int | None) -> _Unit:
        locate = _by_line(prefix, start_line, text) if by_line else _fixed(prefix)
        return _Unit(text, locate, half if continued else 0, accept_to)

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


def _string_units(text: str, location: str) -> Iterator[_Unit]:
    if len(text) <= WINDOW_CHARS:
        yield _Unit(text, _fixed(location))
    else:
        yield from _text_units(io.StringIO(text).read, location, by_line=False)


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


def _findings_for_unit(
    unit: _Unit, pii: list[tuple[int, int, str]], raw: list[tuple[int, int]]
) -> Iterator[PIIFinding]:
    spans = pii + [(s, e, RAW_ID) for s, e in raw]
    for span in sorted(spans):
        if unit.accepts(span[0]):
            yield PIIFinding(unit.locate(span[0]), span[2], _excerpt(unit.text, span, spans))


def _scan_units(units: Iterable[_Unit], scrubber: Scrubber, matcher: RawIdMatcher,
                mentions: bool = True) -> Iterator[PIIFinding]:
    """Analyze units, joining small ones into one analyzer call per batch; `mentions=False` skips the
    shopper-name mention rule (a tokenizer's vocabulary, see TOKENIZER_VOCABULARIES)."""
    batch: list[tuple[_Unit, list[tuple[int, int]]]] = []
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


# --------------------------------------------------------------------------------------------- public API
def scan_texts(texts: Mapping[str, str], scrubber: Scrubber, raw_ids: Collection[str] | RawIdMatcher
) -> list[PIIFinding]:
    """Findings in named texts (params, tags, feature values); a finding's location is the text's name."""
    matcher = raw_ids if isinstance(raw_ids, RawIdMatcher) else RawIdMatcher(raw_ids)
    units = (
        unit
        for name, value in texts.items()
        if value is not None
        for unit in _string_units(str(value), str(name))
    )
    findings = list(_scan_units(units, scrubber, matcher))
    seen = {f.location for f in findings if f.kind == RAW_ID}
    for name, value in texts.items():  # a shopper-named param or tag whose whole value is a raw id
        if value is not None and is_shopper_field(name) and name not in seen and matcher.is_field_id(value):
            findings.append(PIIFinding(str(name), RAW_ID, f"<{RAW_ID}> (the whole value)"))
    return findings


def scan_paths(paths: Iterable[Path], scrubber: Scrubber, raw_ids: Collection[str] | RawIdMatcher
) -> list[PIIFinding]:
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
    log.info(
        "scanned %d file(s) in %.1f s: %d finding(s)", n_files, time.perf_counter() - started, len(findings)
    )
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


def file_kind(path: Path) -> str:
    """How a file is read: "text", "html", "parquet" or "binary" (unknown files are sniffed)."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
        return "text"
    if suffix in BINARY_SUFFIXES:
        return "binary"
    with path.open("rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "binary"
    return "text"


# A saved encoder's tokenizer vocabulary maps words to indices ("user": 2034): the pretrained model's, never
# fitted to shoppers here, so a number after the word "user" there is a token index, not a shopper. With numeric
# shopper ids (amazon2018-games) the mention rule would flag it; these files still get every other check.
TOKENIZER_VOCABULARIES = frozenset({"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"})


def scan_file(path: Path, scrubber: Scrubber, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Findings in one file, read according to its kind."""
    kind = file_kind(path)
    if kind == "text":
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            yield from _scan_units(_text_units(fh.read, str(path)), scrubber, matcher,
                                   mentions=path.name not in TOKENIZER_VOCABULARIES)
        if path.suffix.lower() in (".csv", ".tsv"):
            yield from _scan_csv_shopper_columns(path, matcher)
    elif kind == "html":
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            yield from _scan_units(_html_units(fh.read, str(path)), scrubber, matcher)
    elif kind == "parquet":
        yield from _scan_parquet(path, scrubber, matcher)
    elif path.suffix.lower() == ".npy" and _npy_is_text(path):
        yield from _scan_npy_strings(path, matcher)
    else:
        yield from _scan_binary(path, matcher)


# --------------------------------------------------------------------------------------------- binary
def _scan_binary(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Raw ids in the bytes, in overlapping chunks (a match belongs to the chunk where it starts)."""
    if not matcher:
        return
    overlap = max(2 * (matcher.max_chars * 4 + 2), 64)
    half = overlap // 2
    chunk = max(BINARY_CHUNK, 2 * overlap)
    with path.open("rb") as fh:
        base = 0
        buf = fh.read(chunk)
        first = True
        while buf:
            nxt = fh.read(chunk - overlap)
            last = not nxt
            lo = 0 if first else half
            hi = len(buf) if last else len(buf) - half
            for start, end in matcher.find_bytes(buf):
                if lo <= start < hi:
                    yield PIIFinding(f"{path}@{base + start}", RAW_ID, f"<{RAW_ID}> ({end - start} bytes)")
            if last:
                return
            base += len(buf) - overlap
            buf = buf[-overlap:] + nxt
            first = False


def _scan_csv_shopper_columns(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Whole values of a CSV's shopper-named columns (its text lines were scanned for token ids already)."""
    import csv

    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = next(reader, [])
        columns = [(k, name) for k, name in enumerate(header) if is_shopper_field(name)]
        if not columns:
            return
        for row_no, row in enumerate(reader):
            for k, name in columns:
                if k < len(row) and matcher.is_field_id(row[k]) and row[k].strip() not in matcher:
                    yield PIIFinding(f"{path}:{name}[{row_no}]", RAW_ID, f"<{RAW_ID}> (the whole value)")


def _npy_is_text(path: Path) -> bool:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return False
    return arr.dtype.kind in "US"


def _scan_npy_strings(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """A numpy array of strings stores them as UTF-32 or bytes: compare its values, not its bytes."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False).reshape(-1)
    for lo in range(0, arr.shape[0], 65536):
        for k, value in enumerate(arr[lo : lo + 65536].tolist()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for start, end in matcher.find(text):
                yield PIIFinding(f"{path}[{lo + k}]", RAW_ID, f"<{RAW_ID}> ({end - start} chars)")


# --------------------------------------------------------------------------------------------- parquet
def _scan_parquet(path: Path, scrubber: Scrubber, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    schema = pfile.schema_arrow
    names = [f.name for f in schema]
    yield from _scan_units([_Unit(" ".join(names), _fixed(f"{path}:<columns>"))], scrubber, matcher)

    def is_numeric(t: pa.DataType) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)

    text_cols = [f.name for f in schema if not is_numeric(f.type) and not pa.types.is_temporal(f.type)]
    shopper_cols = {f.name for f in schema if is_shopper_field(f.name)}
    int_cols = [f.name for f in schema if pa.types.is_integer(f.type)
                and (matcher.has_numeric or f.name in shopper_cols)]
    if not text_cols and not int_cols:
        return
    row0 = 0
    for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=text_cols + int_cols):
        for name in text_cols:
            values = batch.column(name).to_pylist()

            def units(values: list[object] = values, name: str = name, first: int = row0) -> Iterator[_Unit]:
                for k, value in enumerate(values):
                    if value is None:
                        continue
                    text = _cell_text(value)
                    if text:
                        yield from _string_units(text, f"{path}:{name}[{first + k}]")

            yield from _scan_units(units(), scrubber, matcher)
            if name in shopper_cols:
                yield from _whole_values(values, f"{path}:{name}", row0, matcher, skip_token_ids=True)
        for name in int_cols:
            values = batch.column(name).to_pylist()
            if name in shopper_cols:
                yield from _whole_values(values, f"{path}:{name}", row0, matcher, skip_token_ids=False)
                continue
            for k, value in enumerate(values):
                if value is not None and str(value) in matcher:
                    yield PIIFinding(f"{path}:{name}[{row0 + k}]", RAW_ID, f"<{RAW_ID}>")
        row0 += batch.num_rows


def _whole_values(values: Iterable[object], where: str, first: int, matcher: RawIdMatcher,
                  skip_token_ids: bool) -> Iterator[PIIFinding]:
    """Cells of a shopper column whose whole value is a raw id (the token scan already found token ids in text
    cells: `skip_token_ids`)."""
    for k, value in enumerate(values):
        if value is None or isinstance(value, list | dict | tuple):
            continue
        if matcher.is_field_id(value) and not (skip_token_ids and str(value).strip() in matcher):
            yield PIIFinding(f"{where}[{first + k}]", RAW_ID, f"<{RAW_ID}> (the whole value)")


def _cell_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return "\n".join(_cell_text(v) for v in value if v is not None)
    if isinstance(value, dict):
        return "\n".join(_cell_text(v) for v in value.values() if v is not None)
    return str(value)


# --------------------------------------------------------------------------------------------- html
_OPEN_TAG = re.compile(r"<(script|style)\b", re.IGNORECASE)
_ANY_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_DATA_SCRIPT = re.compile(r"\s*(?:(?:var|let|const)\s+[\w$.]+\s*=\s*|window\.[\w$.]+\s*=\s*)?[\[{\"]")
_JSON_TYPE = re.compile(r"""type\s*=\s*["']?application/(?:ld\+)?json""", re.IGNORECASE)
_JSON_STRING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"')
MAX_STRING_CHARS = 1024 * 1024


def _visible(html: str) -> str:
    """Text outside tags, keeping line structure (a tag becomes a space plus its newlines)."""
    return unescape(_ANY_TAG.sub(lambda m: " " + "\n" * m.group().count("\n"), html))


class _JsonStrings:
    """Streams the string literals out of a JSON (or JSON-assignment) payload, with their line numbers."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.pending = ""

    def feed(self, data: str, final: bool) -> Iterator[tuple[int, str]]:
        s = self.pending + data
        self.pending = ""
        pos = 0
        while True:
            q = s.find('"', pos)
            if q == -1:
                self.line += s.count("\n", pos)
                return
            self.line += s.count("\n", pos, q)
            m = _JSON_STRING.match(s, q)
            if m is None:
                nl = s.find("\n", q)
                if nl == -1 and not final and len(s) - q < MAX_STRING_CHARS:
                    self.pending = s[q:]  # the string continues in the next chunk
                    return
                pos = q + 1  # an unterminated quote: skip it
                continue
            raw = m.group()
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw[1:-1]
            yield self.line, value
            pos = m.end()


class _HtmlSplitter:
    """Splits an HTML stream into visible text and the strings of JSON data scripts; skips code and styles."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buf = ""
        self.line = 1
        self.mode = "html"  # html | undecided | data | skip
        self.end_tag = "</script"
        self.strings: _JsonStrings | None = None

    def _visible_units(self, html: str) -> Iterator[_Unit]:
        text = _visible(html)
        if text.strip():
            yield from _text_units(io.StringIO(text).read, self.path, self.line)
        self.line += html.count("\n")

    def feed(self, chunk: str, eof: bool) -> Iterator[_Unit]:
        self.buf += chunk
        while self.buf:
            buf = self.buf
            if self.mode == "html":
                m = _OPEN_TAG.search(buf)
                if m:
                    gt = buf.find(">", m.end())
                    if gt == -1 and not eof:
                        return
                    gt = len(buf) - 1 if gt == -1 else gt
                    yield from self._visible_units(buf[: m.start()])
                    tag = buf[m.start() : gt + 1]
                    self.line += tag.count("\n")
                    self.buf = buf[gt + 1 :]
                    is_style = m.group(1).lower() == "style"
                    self.end_tag = "</style" if is_style else "</script"
                    if is_style or re.search(r"\bsrc\s*=", tag, re.IGNORECASE):
                        self.mode = "skip"
                    elif _JSON_TYPE.search(tag):
                        self.mode, self.strings = "data", _JsonStrings(self.line)
                    else:
                        self.mode = "undecided"
                    continue
                lt = buf.rfind("<")  # hold back a tag that may continue in the next chunk
                cut = len(buf) if eof or lt == -1 or len(buf) - lt > WINDOW_CHARS else lt
                if cut == 0:
                    return
                yield from self._visible_units(buf[:cut])
                self.buf = buf[cut:]
            elif self.mode == "undecided":
                if not eof and len(buf.lstrip()) < 256 and self.end_tag not in buf.lower():
                    return
                if _DATA_SCRIPT.match(buf):
                    self.mode, self.strings = "data", _JsonStrings(self.line)
                else:
                    self.mode = "skip"
            else:  # data or skip, up to the closing tag
                end = buf.lower().find(self.end_tag)
                if end == -1:
                    keep = 0 if eof else len(self.end_tag)
                    if len(buf) <= keep:
                        return
                    body, self.buf = buf[: len(buf) - keep], buf[len(buf) - keep :]
                else:
                    body, self.buf = buf[:end], buf[end:]
                done = end != -1 or eof
                if self.mode == "data" and self.strings is not None:
                    for at, value in self.strings.feed(body, final=done):
                        if value:
                            yield from _string_units(value, f"{self.path}:{at}")
                self.line += body.count("\n")
                if done:
                    self.mode, self.strings = "html", None
                if end == -1 and not eof:
                    return


def _html_units(read: Callable[[int], str], path: str) -> Iterator[_Unit]:
    """Units of an HTML page: its visible text and the strings of its JSON data scripts."""
    splitter = _HtmlSplitter(path)
    while True:
        chunk = read(WINDOW_CHARS * 4)
        yield from splitter.feed(chunk, eof=not chunk)
        if not chunk:
            return
