"""Raw shopper ids in text and bytes: `RawIdMatcher`. After ingestion only pseudonyms may appear anywhere.

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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

MIN_RAW_ID_CHARS = 4  # shorter ids ("42") cannot be told apart from ordinary numbers and words
BINARY_FREE_BYTES = 8  # in binary files, a shorter raw id counts only when stored as a string (find_bytes)
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
        self.reasons = {
            f"shorter_than_{min_chars}_chars": len(short),
            f"digits_only_under_{MIN_TOKEN_DIGITS}": len(numeric),
            "words_of_the_catalogue_text": len(public),
        }
        self.n_public_texts = n_public_texts
        self._ids = frozenset(kept)
        self._field_ids = frozenset(ids)
        self.checked = {"shopper_values": 0, "shopper_mentions": 0, "catalogue_values": 0}
        weak = len(ids) - len(kept)
        if weak:
            log.info(
                "%d of %d raw id(s) are checked only as shopper-field values and mentions (%s; e.g. %s): as "
                "tokens anywhere they would match item text and numbers",
                weak,
                len(ids),
                ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.reasons.items() if v),
                ", ".join(sorted(public)[:3] or sorted(ids - kept)[:3]),
            )
        self.max_chars = max((len(i) for i in kept), default=0)
        self.has_numeric = any(i.isdigit() for i in kept)
        self._text = _WholeTokens(kept, binary=False)
        # bytes are read as latin-1; ids shorter than BINARY_FREE_BYTES count only where stored as strings
        encoded = {i.encode("utf-8") for i in kept}
        self._all_b = frozenset(encoded)
        self._bin = _WholeTokens({e.decode("latin-1") for e in encoded if len(e) >= BINARY_FREE_BYTES}, binary=True)
        lengths = [len(e) for e in encoded] or [0]
        self._framings = _framing_prefixes(lengths)
        self._quoted = (
            re.compile(rb"([\"'])([^\"'\x00-\x1f]{%d,%d})\1" % (min(lengths), max(lengths))) if encoded else None
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
