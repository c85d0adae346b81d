"""The service's API key: where it comes from, and the constant-time check of the `X-API-Key` header.

The key is read from `VETTED_API_KEY`. Without it, the demo creates (once) and reuses
`<home>/secrets/api.key` (mode 0600, in a 0700 folder) and logs the file's path, never the key;
anywhere else the service refuses to start.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from pathlib import Path

from ml.privacy.secret_file import demo_secret

log = logging.getLogger(__name__)

API_KEY_ENV = "VETTED_API_KEY"
API_KEY_HEADER = "X-API-Key"
MIN_API_KEY_CHARS = 16


class MissingApiKeyError(RuntimeError):
    """No API key is configured and the demo key is not allowed."""


def demo_key_path(home: Path) -> Path:
    return Path(home) / "secrets" / "api.key"


def load_api_key(env: Mapping[str, str], home: Path, allow_demo_key: bool) -> str:
    """The key from `env`, or (demo only) from the owner-only demo key file; else MissingApiKeyError."""
    raw = env.get(API_KEY_ENV, "")
    if raw:
        if len(raw) < MIN_API_KEY_CHARS:
            raise MissingApiKeyError(
                f"{API_KEY_ENV} has {len(raw)} characters; use at least {MIN_API_KEY_CHARS} "
                f"(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return raw
    if not allow_demo_key:
        raise MissingApiKeyError(
            f"no API key: the service will not start without one. Set {API_KEY_ENV} (at least "
            f"{MIN_API_KEY_CHARS} characters, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`); "
            f"clients send it in the {API_KEY_HEADER} header. Only the demo (VETTED_DEMO=1) creates a local key."
        )
    return _demo_key(demo_key_path(home))


def _demo_key(path: Path) -> str:
    key = demo_secret(path, "API key", API_KEY_ENV, MIN_API_KEY_CHARS, MissingApiKeyError)
    log.info("API key read from the demo key file %s", path)
    return key


def key_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes, so any header value is safe to compare)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
