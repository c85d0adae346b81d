"""The kinds of PII the scrubber finds (each kind's name is its placeholder, "<EMAIL_ADDRESS>") and a finding."""

from __future__ import annotations

from dataclasses import dataclass

EMAIL = "EMAIL_ADDRESS"
PHONE = "PHONE_NUMBER"
CARD = "CREDIT_CARD"
IBAN = "IBAN_CODE"
IP = "IP_ADDRESS"
SSN = "US_SSN"
ADDRESS = "STREET_ADDRESS"
KINDS = (EMAIL, PHONE, CARD, IBAN, IP, SSN, ADDRESS)


@dataclass(frozen=True)
class Finding:
    """One piece of PII in a text: its kind (placeholder name), character span and Presidio score."""

    kind: str
    start: int
    end: int
    score: float
