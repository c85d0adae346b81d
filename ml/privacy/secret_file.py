"""Demo secret files for ml.serving.auth, which still creates its demo API key through this function: the files
themselves are made by ml.keys.demo_secret (ml.keys.load_api_key is the loader to call)."""

from __future__ import annotations

from pathlib import Path

from ml.keys import Secret
from ml.keys import demo_secret as _demo_secret


def demo_secret(path: Path, what: str, env_name: str, min_chars: int, error: type[Exception]) -> str:
    """Create (once) or reuse `path` (ml.keys.demo_secret) for the secret `what` that production sets in `env_name`."""
    return _demo_secret(path, Secret(env_name, what, path.name, error, how="", min_chars=min_chars))
