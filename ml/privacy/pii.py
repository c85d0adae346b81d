"""PII in free text: find it and replace it with typed placeholders such as "<EMAIL_ADDRESS>".

Built on Presidio's pattern recognizers, run offline: a `no_op` NLP engine (no spaCy model) and an e-mail
validator that reads tldextract's bundled suffix list instead of fetching it. Presidio has no street-address
recognizer without NER, so one is defined here (English, German, French and Spanish forms, PO boxes).

Caught: e-mail addresses, phone numbers (national US/GB/DE/FR formats and any international "+CC"/"00CC"
number), payment cards (Luhn-checked), IBANs (checksum), IPv4/IPv6 addresses, US social security numbers,
street addresses. The scrubber blocks promotion when it finds anything in an artifact, so false positives
matter as much as misses; the guards below are what keeps catalog text and metrics files clean:
- a phone match glued to more digits, a fraction or a word ("0.0881234567", "9064900 2-1/2", "350 555-Piece")
  is not a phone; a bare run of digits ("0312353901": an ISBN, an id, a timestamp) counts only after a word
  such as "phone", "call" or "tel"; a national number must look written as one (11 digits after a trunk
  "0" as in "030 12345678", or 10 in 3+ groups as "01 23 45 67 89", else after a phone word; or the North
  American "212-431-6100"); international "+CC"/"00CC" always counts;
- a card number written in groups starts with a group of 4 digits;
- loopback/unspecified addresses and short IPv6 forms ("::1", a Python slice "[::2]") are not IP addresses,
  nor is a dotted version after "==" or "v";
- a street address needs a house number, a street word and no unit or hardware word ("1/4 Inch Drive",
  "USB 3 Hard Drive" are products).

Presidio's matchers read a text left to right and do not overlap, so a number written just before a phone or
card ("Item 1075 4012-8888-8888-1881", "(212) 555-1117 172.8") can swallow it into a longer match that then
fails its check. A second pass (`_formatted_findings`) looks for the unmistakable written forms at every start:
a card in four-digit groups with one separator that passes Luhn, a North American number with its area code in
brackets or dashes, and a "+CC" number whose longest prefix of digit groups is a possible number for its
country. benchmarks/results/robustness-ingest.md counts what reaches the lake.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

EMAIL = "EMAIL_ADDRESS"
PHONE = "PHONE_NUMBER"
CARD = "CREDIT_CARD"
IBAN = "IBAN_CODE"
IP = "IP_ADDRESS"
SSN = "US_SSN"
ADDRESS = "STREET_ADDRESS"
KINDS = (EMAIL, PHONE, CARD, IBAN, IP, SSN, ADDRESS)

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
PHONE_REGIONS = ("US", "GB", "DE", "FR")
PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|sms|whatsapp|fax|handy|téléphone|telefon"
    r"|ruf|anrufen)\b(?:\W+\w{1,4}){0,2}\W{0,6}$"
)
CONTEXT_CHARS = 30
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

# words that turn "<number> <words> <street word>" into a product, not an address
_NOT_STREET_WORDS = frozenset(
    """
    inch inches in mm cm ft foot feet yd pc pcs piece pieces pack pk set count ct lb lbs oz kg gal
    volt volts amp amps watt watts hp rpm psi gauge awg ga mil point pt port ports bay slot speed
    hard flash disk disc thumb pen usb optical floppy tape zip screw belt direct solid state ssd hdd sata
    gear chain shaft socket ratchet hex torx square sq star spline one two three four five six way lane
    player person seat tier layer wire pin pole channel bit drill driver round heavy duty
    """.split()
)
_EN_STREET = (
    r"Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?|Place|Pl\.?"
    r"|Terrace|Way|Close|Crescent|Parkway|Pkwy\.?|Highway|Hwy\.?|Square|Circle|Cir\.?|Row|Mews|Gardens"
)
ADDRESS_PATTERNS: tuple[tuple[str, str, float], ...] = (
    # 221B Baker Street / 1600 Pennsylvania Avenue NW / 12 N. Main St. Springfield: the street word must end
    # the text or be followed by a comma, a direction or a unit ("10 Heavy Duty Drive Chains" is a product)
    (
        "street address (en)",
        r"(?<![\w/.,-])\d{1,5}[A-Za-z]?\s+(?:[A-Z][\w'’.-]*\s+){1,4}(?:" + _EN_STREET + r")"
        r"(?=\s*$|\s*[,;\n]|(?<=\.)\s|\s+(?:[NSEW]|NE|NW|SE|SW|Apt|Suite|Unit|Floor|#)\b)",
        0.6,
    ),
    # Hauptstraße 5 / Friedrichstr. 123a / Lindenallee 7
    (
        "street address (de)",
        r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|allee|gasse|platz|weg)\s?\d{1,4}[a-z]?\b",
        0.6,
    ),
    # 12 rue de Rivoli / 5 bis avenue des Champs-Élysées / 10, boulevard Haussmann
    (
        "street address (fr)",
        r"(?<![\w/.,-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|boulevard|bd|chemin|allée|impasse|quai)"
        r"\s+(?:(?:de|du|des|la|le|l'|d')\s*)*[A-ZÀ-Ý][\w'’-]+",
        0.6,
    ),
    # Calle Mayor 10 / Avenida de la Paz 23 / Rua Augusta 100
    (
        "street address (es/pt)",
        r"\b(?:Calle|Avenida|Av\.|Paseo|Plaza|Rua|Carrer)\s+(?:(?:de|del|la|las|los|da|do)\s+)*"
        r"(?:[A-ZÁÉÍÓÚÑ][\wáéíóúñ'-]*\s+){1,3}\d{1,4}\b",
        0.6,
    ),
    # P.O. Box 1234 / Postfach 10 20 30
    ("po box", r"(?i:\bp\.?\s?o\.?\s*box|\bpostfach)\s+\d{1,6}(?:\s\d{2}){0,2}\b", 0.6),
)


@dataclass(frozen=True)
class Finding:
    """One piece of PII in a text: its kind (placeholder name), character span and Presidio score."""

    kind: str
    start: int
    end: int
    score: float


_PHONE_CLUSTER = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,}")
_PHONE_MARGIN = 24  # room for "+44 (0)" before a cluster and for the matcher's look at its neighbours


def _phone_windows(text: str) -> list[tuple[int, int]]:
    """Merged spans around every cluster of 7+ closely written digits: where a phone number can be."""
    windows: list[tuple[int, int]] = []
    for m in _PHONE_CLUSTER.finditer(text):
        lo, hi = max(0, m.start() - _PHONE_MARGIN), min(len(text), m.end() + _PHONE_MARGIN)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


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


def _build_analyzer() -> AnalyzerEngine:
    """A Presidio analyzer with our recognizers only, no NLP model, no network."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # the bundled public-suffix snapshot: no HTTP fetch, no cache folder written
    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class ClusterPhoneRecognizer(PhoneRecognizer):
        """Presidio's phone recognizer, run only around clusters of 7+ digits: libphonenumber's matcher tries
        every digit run of a text in every region, which is most of the scrubber's time on numeric text."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results: list[Any] = []
            for lo, hi in _phone_windows(text):
                for r in super().analyze(text[lo:hi], entities, nlp_artifacts):
                    r.start += lo
                    r.end += lo
                    results.append(r)
            return results

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_tld(pattern_text).fqdn != ""

    class StreetAddressRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            words = re.findall(r"[A-Za-zÀ-ÿ]+", pattern_text.lower())
            if any(w in _NOT_STREET_WORDS for w in words[:-1]):
                return True
            # "12 V Battery Drive": a unit letter after the number, where an address has a direction or a name
            return bool(re.match(r"\d+\s+[A-DF-MO-RT-VX-Z]\b(?!\.)", pattern_text))

    address = StreetAddressRecognizer(
        supported_entity=ADDRESS,
        name="StreetAddressRecognizer",
        patterns=[Pattern(name, regex, score) for name, regex, score in ADDRESS_PATTERNS],
        context=["address", "street", "ship", "deliver", "live"],
        global_regex_flags=re.MULTILINE,  # case matters: street names are capitalized
    )
    nlp = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]}
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        OfflineEmailRecognizer(),
        ClusterPhoneRecognizer(supported_regions=PHONE_REGIONS),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
        address,
    ):
        registry.add_recognizer(recognizer)
    presidio_log = logging.getLogger("presidio-analyzer")
    if presidio_log.level == logging.NOTSET:  # it logs every call at INFO ("Skipping context extraction...")
        presidio_log.setLevel(logging.WARNING)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def _plausible(kind: str, text: str, start: int, end: int) -> bool:
    """The guards against false positives described in the module docstring."""
    value = text[start:end]
    before = text[max(0, start - CONTEXT_CHARS) : start]
    after = text[end : end + 2]
    if kind == PHONE:
        return _plausible_phone(value, before, after)
    if kind in (CARD, SSN) and (re.search(r"[\d.]$|\d-$", before) or re.match(r"\.?\d", after)):
        return False  # the digits of a decimal or of a longer number: ".2823529411764706"
    if kind == CARD and re.search(r"[- ]", value) and not re.match(r"\d{4}[- ]", value):
        return False  # written cards are grouped from 4 digits: "1400750340 10606" is two numbers
    if kind == IP:
        if re.search(r"(?:[=<>~!]=|\bv|\bver(?:sion)?\W*|\d\.|[\w.]-)$", before, re.IGNORECASE) or re.match(
            r"\.\d", after
        ):
            return False  # a version ("==1.2.3.4", "v1.2.3.4") or part of a longer dotted number
        if re.search(r"\d\s?[,-]$", before) and re.match(r"[,-]\.?\d", after):
            return False  # one of a list of numbers (coordinates of an SVG path)
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        if address.is_loopback or address.is_unspecified:
            return False
        return address.version == 4 or sum(1 for group in value.split(":") if group) >= 3
    return True


_US_FORMAT = re.compile(r"(?:1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}")


def _plausible_phone(value: str, before: str, after: str) -> bool:
    """Tell a written phone number from a part number, a measurement or a run of digits."""
    value = value.strip()
    if re.search(r"[\d.,/#-]$", before) or re.match(r"[.,/]?\d|/|-?[^\W\d_]", after):
        return False  # glued to digits, a fraction, a "#" or a word: "0.0881234567", "2-1/2", "#333333", "555-Piece"
    if value.startswith(("+", "00")):
        return True  # international form
    groups = re.findall(r"\d+", value)
    if len(groups) == 1:  # a bare run of digits: an id, a timestamp, an ISBN, unless a phone word precedes it
        return bool(PHONE_CONTEXT.search(before))
    if any(len(g) == 1 for g in groups[1:]) or (len(groups[0]) == 1 and groups[0] != "1"):
        return False  # "0.990 - 1.160", "08648 10.1"
    if value.startswith("0"):  # national trunk prefix (GB, DE, FR): a full number has 10-11 digits
        digits = sum(len(g) for g in groups)
        # two groups of 10 digits ("08648 16488") are as often a part number and a quantity: need a phone word
        return digits >= 11 or (digits == 10 and (len(groups) > 2 or bool(PHONE_CONTEXT.search(before))))
    return bool(_US_FORMAT.fullmatch(value))  # North American: (212) 431-6100, 212-431-6100, 1-800-814-5452


_GROUPED_CARD = re.compile(r"[2-6]\d{3}([- ])\d{4}\1\d{4}\1\d{1,7}(?!\d)")
_NANP_PHONE = re.compile(r"(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}(?![\d]|[.-]\d)")
_PLUS_PHONE = re.compile(r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,5}")
_DIGIT_RUN_START = re.compile(r"(?<![\w+-])[\d(+]")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _possible_phone_prefix(candidate: str) -> int:
    """Length of the longest prefix of a "+CC ..." candidate, cut at a digit group, that is a possible phone
    number for its country (libphonenumber); 0 when none is."""
    import phonenumbers

    ends = [m.end() for m in re.finditer(r"\d+\)?", candidate)]
    for end in reversed(ends):
        try:
            number = phonenumbers.parse(candidate[:end], None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number) and len(str(number.national_number)) >= 6:
            return end
    return 0


def _formatted_findings(text: str) -> list[Finding]:
    """Cards and phones in their unmistakable written forms, tried at every start of a digit run (see the
    module docstring): what a left-to-right matcher misses when a number is written right before them."""
    found: list[Finding] = []
    for start in (m.start() for m in _DIGIT_RUN_START.finditer(text)):
        card = _GROUPED_CARD.match(text, start)
        if card:
            digits = re.sub(r"\D", "", card.group())
            if 13 <= len(digits) <= 19 and _luhn(digits):
                found.append(Finding(CARD, start, card.end(), 1.0))
                continue
        phone = _NANP_PHONE.match(text, start)
        if phone:
            found.append(Finding(PHONE, start, phone.end(), 1.0))
            continue
        plus = _PLUS_PHONE.match(text, start)
        if plus:
            end = _possible_phone_prefix(plus.group())
            if end:
                found.append(Finding(PHONE, start, start + end, 1.0))
    return found


def _resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings (higher score, then longer span), in text order."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


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
            self._analyzer = _build_analyzer()
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
        findings = [f for f in findings if _plausible(f.kind, text, f.start, f.end)]
        return _resolve_overlaps(findings + _formatted_findings(text))

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
            starts = list(
                itertools.accumulate((len(line) + len(_LINE_SEP) for _, line in lines[:-1]), initial=0)
            )
            joined = _LINE_SEP.join(line for _, line in lines)
            for f in self._analyze(joined, kinds):
                k = bisect.bisect_right(starts, f.start) - 1
                offset, line = lines[k]
                start, end = f.start - starts[k], f.end - starts[k]
                if end <= len(
                    line
                ):  # a match reaching into the separator spans two lines: not one piece of PII
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
