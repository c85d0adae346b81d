"""The Presidio analyzer behind the scrubber: pattern recognizers only, offline.

A `no_op` NLP engine (no spaCy model) and an e-mail validator that reads tldextract's bundled suffix list instead
of fetching it. Presidio has no street-address recognizer without NER, so one is defined here (English, German,
French and Spanish forms, PO boxes): it needs a house number, a street word and no unit or hardware word ("1/4
Inch Drive", "USB 3 Hard Drive" are products). The phone recognizer reads only the windows around clusters of
7+ digits.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from ml.privacy.pii_kinds import ADDRESS

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

PHONE_REGIONS = ("US", "GB", "DE", "FR")

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


def build_analyzer() -> AnalyzerEngine:
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
