"""Keyed pseudonyms for shoppers: HMAC-SHA256 of the raw user id under a secret key.

The key is loaded by ml.keys (given by the caller, or `VETTED_PSEUDONYM_KEY`; the demo may create a local key
file readable by its owner only) and is never logged, printed or stored in an artifact.
Serving pseudonymizes at its boundary with the same key, so the same shopper maps to the same pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import NoReturn, SupportsIndex

import pandas as pd

log = logging.getLogger(__name__)

PREFIX = "u_"
HEX_CHARS = 32


class Pseudonymizer:
    """Maps raw ids to stable keyed pseudonyms: "u_" + first 32 hex digits of HMAC-SHA256(key, raw)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) == 0:
            raise ValueError("Pseudonymizer needs a non-empty key (bytes); see ml.keys.load_pseudonym_key()")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a Pseudonymizer holds a secret key and must not be pickled; build it where it is used")

    def pseudonym(self, raw: str) -> str:
        """The pseudonym of one raw id."""
        digest = hmac.new(self._key, str(raw).encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:HEX_CHARS]

    def apply(self, df: pd.DataFrame, column: str = "user_id") -> pd.DataFrame:
        """A new frame with `column` replaced by pseudonyms; missing values (None/NaN) stay missing."""
        if column not in df.columns:
            raise KeyError(f"cannot pseudonymize: column {column!r} not in {list(df.columns)}")
        out = df.copy()
        values = out[column]
        cache: dict[str, str] = {}

        def one(v: object) -> object:
            if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
                return None
            s = str(v)
            p = cache.get(s)
            if p is None:
                p = cache[s] = self.pseudonym(s)
            return p

        out[column] = pd.Series([one(v) for v in values], index=values.index, dtype=object)
        return out
