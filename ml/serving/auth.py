"""The service's API key header and its constant-time check. The key itself is loaded by `ml.keys.load_api_key`
(`VETTED_API_KEY`; without it, the demo creates and reuses `<home>/secrets/api.key`; anywhere else the service
refuses to start)."""

from __future__ import annotations

import hmac

API_KEY_ENV = "VETTED_API_KEY"
API_KEY_HEADER = "X-API-Key"


def key_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes, so any header value is safe to compare)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
