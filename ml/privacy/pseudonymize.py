"""Keyed pseudonyms for shoppers: HMAC-SHA256 of the raw user id under a secret key.

The key comes from the environment (`VETTED_PSEUDONYM_KEY`, which an Airflow connection
`vetted_pseudonym_key` can feed) and is never logged, printed or stored in an artifact. Outside the demo
a missing key is an error; the demo may create a local key file readable by its owner only.
Serving pseudonymizes at its boundary with the same key, so the same shopper maps to the same pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn, SupportsIndex

import pandas as pd

from ml.privacy.secret_file import demo_secret

log = logging.getLogger(__name__)

KEY_ENV = "VETTED_PSEUDONYM_KEY"
KEY_CONNECTION = "vetted_pseudonym_key"
MIN_KEY_CHARS = 16
PREFIX = "u_"
HEX_CHARS = 32


class MissingKeyError(RuntimeError):
    """No pseudonym key is configured and the demo key is not allowed."""


def _demo_key_path(home: Path) -> Path:
    return home / "secrets" / "pseudonym.key"


def load_key(env: Mapping[str, str], home: Path, allow_demo_key: bool) -> bytes:
    """Return the pseudonym key from `env`, or (demo only) from a local owner-only key file under `home`."""
    raw = env.get(KEY_ENV, "")
    if raw:
        if len(raw) < MIN_KEY_CHARS:
            raise MissingKeyError(
                f"{KEY_ENV} is set but has {len(raw)} characters; use at least {MIN_KEY_CHARS} "
                f"(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        log.info("pseudonym key read from the environment (%s)", KEY_ENV)
        return raw.encode("utf-8")
    if not allow_demo_key:
        raise MissingKeyError(
            f"no pseudonym key: set the environment variable {KEY_ENV} (at least {MIN_KEY_CHARS} characters, "
            f"e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`), or create an Airflow "
            f"connection `{KEY_CONNECTION}` whose password is the key (exposed to tasks as {KEY_ENV}). "
            f"Only the demo may generate a local key."
        )
    return _demo_key(_demo_key_path(home))


def _demo_key(path: Path) -> bytes:
    """Create (once) or reuse the demo key file: 32 random bytes, hex, mode 0600 in a 0700 folder."""
    return demo_secret(path, "pseudonym key", KEY_ENV, MIN_KEY_CHARS, MissingKeyError).encode("ascii")


class Pseudonymizer:
    """Maps raw ids to stable keyed pseudonyms: "u_" + first 32 hex digits of HMAC-SHA256(key, raw)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) == 0:
            raise ValueError("Pseudonymizer needs a non-empty key (bytes); see load_key()")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "a Pseudonymizer holds a secret key and must not be pickled; build it where it is used"
        )

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
