"""The service's and the pipeline's secrets: the pseudonym key and the API key, one loader for both.

A secret comes from the caller (`value`: what an Airflow connection or a secret store gave the DAG), else from the
environment variable production sets. Without either, only the demo creates one (once) and reuses it:
`<home>/secrets/<file>`, 32 random bytes as hex, mode 0600 in a 0700 folder, its path logged, never its value;
anywhere else a missing secret stops the process with what to set. Nothing here writes a secret into the
environment: library functions take the key as an argument.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class MissingSecretError(RuntimeError):
    """A secret is not configured (or too short) and the demo secret is not allowed."""


class MissingKeyError(MissingSecretError):
    """No pseudonym key is configured and the demo key is not allowed."""


class MissingApiKeyError(MissingSecretError):
    """No API key is configured and the demo key is not allowed."""


@dataclass(frozen=True)
class Secret:
    """One secret: the variable production sets, its name in messages, its demo file, and how to make one."""

    env: str
    what: str
    demo_file: str
    error: type[Exception]
    how: str  # how production provides it, for the message of a missing secret
    min_chars: int = 16
    make: str = "python -c 'import secrets; print(secrets.token_hex(32))'"

    def demo_path(self, home: Path) -> Path:
        return Path(home) / "secrets" / self.demo_file


PSEUDONYM_KEY = Secret(
    "VETTED_PSEUDONYM_KEY",
    "pseudonym key",
    "pseudonym.key",
    MissingKeyError,
    "or create an Airflow connection `vetted_pseudonym_key` whose password is the key (the DAG passes it to "
    "the ingest stage). Only the demo may generate a local key.",
)
API_KEY = Secret(
    "VETTED_API_KEY",
    "API key",
    "api.key",
    MissingApiKeyError,
    "clients send it in the X-API-Key header; the service will not start without one. Only the demo "
    "(VETTED_DEMO=1) creates a local key.",
    make="python -c 'import secrets; print(secrets.token_urlsafe(32))'",
)


def load_secret(secret: Secret, env: Mapping[str, str], home: Path, allow_demo: bool, value: str | None = None) -> str:
    """The secret from `value`, else from `env`, else (demo only) from its owner-only demo file under `home`."""
    raw, where = (value, "the caller") if value else (env.get(secret.env, ""), f"the environment ({secret.env})")
    if raw:
        if len(raw) < secret.min_chars:
            raise secret.error(
                f"the {secret.what} from {where} has {len(raw)} characters; use at least "
                f"{secret.min_chars} (for example: {secret.make})"
            )
        log.info("%s read from %s", secret.what, where)
        return raw
    if not allow_demo:
        raise secret.error(
            f"no {secret.what}: set the environment variable {secret.env} (at least {secret.min_chars} "
            f"characters, e.g. from `{secret.make}`), {secret.how}"
        )
    path = secret.demo_path(home)
    value = demo_secret(path, secret)
    log.info("%s read from the demo file %s", secret.what, path)
    return value


def load_pseudonym_key(env: Mapping[str, str], home: Path, allow_demo_key: bool, value: str | None = None) -> bytes:
    """The pseudonym key (PSEUDONYM_KEY) as the bytes ml.privacy.pseudonymize.Pseudonymizer takes."""
    return load_secret(PSEUDONYM_KEY, env, home, allow_demo_key, value).encode("utf-8")


def load_api_key(env: Mapping[str, str], home: Path, allow_demo_key: bool, value: str | None = None) -> str:
    """The service's API key (API_KEY)."""
    return load_secret(API_KEY, env, home, allow_demo_key, value)


def demo_secret(path: Path, secret: Secret) -> str:
    """Create (once) or reuse `path`: 32 random bytes as hex, mode 0600 in a 0700 folder. Processes that start
    together agree: the file is created exclusively, and a process that loses the race reads the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: reuse theirs
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32))
            log.warning("created a demo %s file at %s (demo only; set %s in production)", secret.what, path, secret.env)
    os.chmod(path, 0o600)
    value = path.read_text(encoding="ascii").strip()
    if len(value) < secret.min_chars:
        raise secret.error(f"the demo {secret.what} file {path} is empty or too short; delete it to create a new one")
    return value
