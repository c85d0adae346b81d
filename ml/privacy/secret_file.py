"""Demo-only secret files: created once, readable by their owner only, reused by every later process."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


def demo_secret(path: Path, what: str, env_name: str, min_chars: int, error: type[Exception]) -> str:
    """Create (once) or reuse `path`: 32 random bytes as hex, mode 0600 in a 0700 folder.

    `what` names the secret in messages ("pseudonym key"); `env_name` is where production sets it instead.
    """
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
            log.warning("created a demo %s file at %s (demo only; set %s in production)", what, path, env_name)
    os.chmod(path, 0o600)
    value = path.read_text(encoding="ascii").strip()
    if len(value) < min_chars:
        raise error(f"the demo {what} file {path} is empty or too short; delete it to create a new one")
    return value
