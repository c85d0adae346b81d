from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ml.privacy.pii import ADDRESS, CARD, EMAIL, IBAN, IP, PHONE, SSN, PIIScrubber

REAL = Path(__file__).parents[2] / ".." / "shared" / "data" / "amazon2018-industrial"

# (text, the PII in it with its kind); international formats included
POSITIVE = [
    ("mail me at jane.doe@example.co.uk please", EMAIL, "jane.doe@example.co.uk"),
    ("jane+shop@mail.example.org", EMAIL, "jane+shop@mail.example.org"),
    ("call (212) 431-6100 after 5", PHONE, "(212) 431-6100"),
    ("US 212-431-6100", PHONE, "212-431-6100"),
    ("+1 (212) 431-6100", PHONE, "+1 (212) 431-6100"),
    ("UK office +44 20 7946 0958", PHONE, "+44 20 7946 0958"),
    ("Berlin +49 30 12345678", PHONE, "+49 30 12345678"),
    ("Beijing +86 138 0013 8000", PHONE, "+86 138 0013 8000"),
    ("Tel: +33 1 23 45 67 89", PHONE, "+33 1 23 45 67 89"),
    ("0049 30 1234567", PHONE, "0049 30 1234567"),
    ("Phone: 020 7946 0958", PHONE, "020 7946 0958"),
    ("ruf an: 030 12345678", PHONE, "030 12345678"),
    ("tel 07700 900123", PHONE, "07700 900123"),
    ("call me on 2125551234", PHONE, "2125551234"),
    ("visa 4111 1111 1111 1111 exp 12/29", CARD, "4111 1111 1111 1111"),
    ("Mastercard 5500-0000-0000-0004", CARD, "5500-0000-0000-0004"),
    ("Amex 3782 822463 10005", CARD, "3782 822463 10005"),
    ("IBAN DE89 3704 0044 0532 0130 00", IBAN, "DE89 3704 0044 0532 0130 00"),
    ("GB82 WEST 1234 5698 7654 32", IBAN, "GB82 WEST 1234 5698 7654 32"),
    ("FR14 2004 1010 0505 0001 3M02 606", IBAN, "FR14 2004 1010 0505 0001 3M02 606"),
    ("from 203.0.113.7 yesterday", IP, "203.0.113.7"),
    ("ip fe80::1ff:fe23:4567:890a", IP, "fe80::1ff:fe23:4567:890a"),
    ("SSN 536-22-8841", SSN, "536-22-8841"),
    ("221B Baker Street, London", ADDRESS, "221B Baker Street"),
    ("1600 Pennsylvania Avenue NW", ADDRESS, "1600 Pennsylvania Avenue"),
    ("ship to 12 N. Main St. Springfield", ADDRESS, "12 N. Main St."),
    ("200 Park Avenue, New York", ADDRESS, "200 Park Avenue"),
    ("Hauptstraße 5, 10115 Berlin", ADDRESS, "Hauptstraße 5"),
    ("Friedrichstr. 123a", ADDRESS, "Friedrichstr. 123a"),
    ("12 rue de Rivoli, Paris", ADDRESS, "12 rue de Rivoli"),
    ("Calle Mayor 10, Madrid", ADDRESS, "Calle Mayor 10"),
    ("send to P.O. Box 1234", ADDRESS, "P.O. Box 1234"),
]

# product titles, metrics, versions, ids: flagging any of these would block a promotion for nothing
NEGATIVE = [
    "M8 x 1.25 bolt, 50-pack, 3/8-inch",
    "ISO 9001 2015",
    "1/4 Inch Drive Socket Set 12 pc",
    "USB 3 Hard Drive Enclosure",
    "10 Heavy Duty Drive Chains",
    "Pack of 2 Round Way Signs",
    "3 Way Valve Brass",
    "Shop-Vac 9064900 2-1/2-Inch Diameter Vacuum Hose",
    "Hillman 829300 1/4-20 SS HEX NUT",
    "Dap 08648 10.1 oz. 100% Silicone",
    "ATD Tools 350 555-Piece Cotter Pin Assortment",
    "Grade 8 Hex Head Cap Screw 1/2-13 x 2 Inch",
    "3M 6200 Half Facepiece Respirator, Medium",
    "Dr Martens 1460 Boots",
    "12 V Battery Drive",
    "dap 08648 16488",  # a part number and a quantity, shaped like a German landline
    "pro series 1400750340 10606",  # Luhn-valid by chance, but no card is written in these groups
    "Lot of 100 pcs 0.1uF 50V capacitors 104",
    "Rated 4.5 of 5 stars, 1,234 reviews",
    "ISBN 978-3-16-148410-0",
    "EAN 4006381333931",
    "0312353901",
    "SKU 123456789",
    "ZIP 12345-6789",
    "Order #12345678 shipped",
    "card 4111 1111 1111 1112",  # fails the Luhn check
    "ndcg_at_10: 0.0881234567",
    "torch==2.13.0.1",
    "version 1.2.3.4",
    "x[::2] and ::1 and 127.0.0.1",
    "utc_time_created: '2024-05-01 12:30:45.123456'",
    "run_id: 4f0c8d1e2a3b4c5d6e7f8091a2b3c4d5",
    'legends:{text:{fill:"#333333"}}',
    "[0.0123, 1.2345678901, 2345678901]",
]


@pytest.fixture(scope="module")
def scrubber() -> PIIScrubber:
    return PIIScrubber()


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVE, ids=[c[0][:30] for c in POSITIVE])
def test_finds_pii(scrubber, text, kind, value):
    findings = scrubber.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, value)]
    scrubbed, counts = scrubber.scrub(text)
    assert value not in scrubbed and f"<{kind}>" in scrubbed
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", NEGATIVE)
def test_leaves_non_pii_alone(scrubber, text):
    assert scrubber.find(text) == []
    assert scrubber.scrub(text) == (text, Counter())


def test_table_is_big_enough():
    assert len(POSITIVE) >= 25 and len(NEGATIVE) >= 25
    assert {kind for _, kind, _ in POSITIVE} == {EMAIL, PHONE, CARD, IBAN, IP, SSN, ADDRESS}


def test_scrub_replaces_several_with_typed_placeholders(scrubber):
    text = "jane@example.com or +44 20 7946 0958, card 4111-1111-1111-1111, jane@example.com"
    scrubbed, counts = scrubber.scrub(text)
    assert scrubbed == "<EMAIL_ADDRESS> or <PHONE_NUMBER>, card <CREDIT_CARD>, <EMAIL_ADDRESS>"
    assert counts == Counter({EMAIL: 2, PHONE: 1, CARD: 1})


def test_scrub_series_keeps_missing_values(scrubber):
    s = pd.Series(["bolts m8", None, "write to a@b.com", math.nan, "write to a@b.com"], name="query")
    out, counts = scrubber.scrub_series(s)
    assert out.name == "query" and list(out.index) == list(s.index)
    assert out[0] == "bolts m8" and out[1] is None and math.isnan(out[3])
    assert out[2] == out[4] == "write to <EMAIL_ADDRESS>"
    assert counts == Counter({EMAIL: 2})


def test_engine_built_lazily_once():
    s = PIIScrubber()
    assert s._analyzer is None
    assert s.find("no digits and no at-sign here") == []
    assert s._analyzer is None  # nothing that could hold PII reached Presidio
    s.find("a@b.com")
    engine = s._analyzer
    s.find("c@d.com")
    assert engine is not None and s._analyzer is engine


def test_thresholds_validate_kinds():
    with pytest.raises(ValueError, match="unknown PII kind"):
        PIIScrubber(thresholds={"PERSON": 0.5})


@pytest.mark.data
def test_no_finding_in_real_product_titles(scrubber):
    path = REAL / "Industrial_and_Scientific.item.json"
    if not path.exists():
        pytest.skip(f"real corpus not found at {path.resolve()} (needs ../shared/data/amazon2018-industrial)")
    titles = [item["title"] for item in json.loads(path.read_text()).values() if item.get("title")]
    assert len(titles) > 3000
    flagged = [(t, scrubber.find(t)) for t in titles]
    assert [t for t, f in flagged if f] == []


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("Item 1075 4012-8888-8888-1881", "CREDIT_CARD", "4012-8888-8888-1881"),
        ("1767571200 4111 1111 1111 1111", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("(212) 555-1117 172.8", "PHONE_NUMBER", "(212) 555-1117"),
        ("Mozilla/5.0 (212) 555-5838", "PHONE_NUMBER", "(212) 555-5838"),
        ("+44 20 7946 3089 60+", "PHONE_NUMBER", "+44 20 7946 3089"),
        ("60+ +49 30 12343355", "PHONE_NUMBER", "+49 30 12343355"),
    ],
)
def test_a_number_written_just_before_a_card_or_phone_does_not_hide_it(scrubber, text, kind, value):
    """Presidio's matchers do not overlap: "1075 4012-8888-8888" swallows the card and fails Luhn."""
    scrubbed, counts = scrubber.scrub(text)
    assert value not in scrubbed and counts[kind] == 1, scrubbed


@pytest.mark.parametrize("text", ["4012-8888-8888-1882", "Model 1234-5678-9012-3456 kit", "SKU 212-431-61000"])
def test_written_forms_that_fail_their_check_are_kept(scrubber, text):
    assert scrubber.scrub(text)[0] == text
