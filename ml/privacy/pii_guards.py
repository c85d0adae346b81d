"""The scrubber's guards against false positives, and the second pass for numbers written back to back.

The scrubber blocks promotion when it finds anything in an artifact, so false positives matter as much as
misses; these guards (`plausible`) are what keeps catalog text and metrics files clean:
- a phone match glued to more digits, a fraction or a word ("0.0881234567", "9064900 2-1/2", "350 555-Piece")
  is not a phone; a bare run of digits ("0312353901": an ISBN, an id, a timestamp) counts only after a word
  such as "phone", "call" or "tel"; a national number must look written as one (11 digits after a trunk
  "0" as in "030 12345678", or 10 in 3+ groups as "01 23 45 67 89", else after a phone word; or the North
  American "212-431-6100"); international "+CC"/"00CC" always counts;
- a card number written in groups starts with a group of 4 digits;
- loopback/unspecified addresses and short IPv6 forms ("::1", a Python slice "[::2]") are not IP addresses,
  nor is a dotted version after "==" or "v".
The street-address guard is part of its recognizer (``ml.privacy.pii_recognizers``).

Presidio's matchers read a text left to right and do not overlap, so a number written just before a phone or
card ("Item 1075 4012-8888-8888-1881", "(212) 555-1117 172.8") can swallow it into a longer match that then
fails its check. A second pass (`formatted_findings`) looks for the unmistakable written forms at every start:
a card in four-digit groups with one separator that passes Luhn, a North American number with its area code in
brackets or dashes, and a "+CC" number whose longest prefix of digit groups is a possible number for its
country. benchmarks/results/robustness-ingest.md counts what reaches the lake.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ml.privacy.pii_kinds import CARD, IP, PHONE, SSN, Finding

PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|sms|whatsapp|fax|handy|téléphone|telefon"
    r"|ruf|anrufen)\b(?:\W+\w{1,4}){0,2}\W{0,6}$"
)
CONTEXT_CHARS = 30


def plausible(kind: str, text: str, start: int, end: int) -> bool:
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


def formatted_findings(text: str) -> list[Finding]:
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


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings (higher score, then longer span), in text order."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
