"""Write docker/.env from docker/.env.example, filling every empty value with a fresh random secret.

    python docker/generate_env.py            # create docker/.env (refuses to overwrite it)
    python docker/generate_env.py --update   # after an upgrade: add variables new in .env.example,
                                             # keep every value docker/.env already has

Secrets are never printed. The file is written with mode 0600. Values that already exist are never
rotated: the database passwords are set once, when the PostgreSQL volume is created, and a new Fernet
or pseudonym key would make stored data unreadable or unlinkable (see docs/production.md).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
# MinIO caps secret keys at 40 characters; 16 random bytes in hex are 32.
SHORT_SECRETS = frozenset({"MINIO_ROOT_PASSWORD", "VETTED_S3_SECRET_KEY"})
FERNET_KEYS = frozenset({"AIRFLOW_FERNET_KEY"})


class EnvFileError(ValueError):
    """The template or the existing env file cannot be used; the message says which line and why."""


def make_secret(name: str) -> str:
    """A fresh random value for the variable `name`, in the format that variable needs."""
    if name in FERNET_KEYS:
        return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    if name in SHORT_SECRETS:
        return secrets.token_hex(16)
    return secrets.token_hex(32)


def parse_env(text: str, source: str = "env file") -> dict[str, str]:
    """`KEY=value` lines of a compose env file (comments and blank lines skipped; no quoting rules)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise EnvFileError(f"{source} line {number}: expected KEY=value, got {line!r}")
        values[key] = value
    return values


def render_env(
    template: str,
    existing: Mapping[str, str] | None = None,
    secret: Callable[[str], str] = make_secret,
) -> str:
    """The template with each empty value filled: from `existing` when it has the key, else by `secret(key)`.

    Non-empty template values (settings such as ports and names) are kept unless `existing` overrides them;
    comments and order follow the template. Keys of `existing` the template does not know are appended.
    """
    existing = dict(existing or {})
    known: set[str] = set()
    out: list[str] = []
    for number, line in enumerate(template.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        key, sep, default = stripped.partition("=")
        if not sep:
            raise EnvFileError(f"template line {number}: expected KEY=value, got {line!r}")
        known.add(key)
        if existing.get(key):
            value = existing[key]
        elif default:
            value = default
        else:
            value = secret(key)
        out.append(f"{key}={value}")
    extra = [k for k in existing if k not in known]
    if extra:
        out.append("")
        out.append("# --- kept from the previous docker/.env (not in .env.example) ---")
        out.extend(f"{k}={existing[k]}" for k in extra)
    return "\n".join(out) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=HERE / ".env.example")
    parser.add_argument("--output", type=Path, default=HERE / ".env")
    parser.add_argument("--update", action="store_true", help="fill only what the existing file lacks")
    args = parser.parse_args(argv)
    template = args.template.read_text(encoding="utf-8")
    existing: dict[str, str] = {}
    if args.output.exists():
        if not args.update:
            print(
                f"{args.output} already exists; not overwriting it (its passwords are already in use). "
                f"Use --update to add only the variables it lacks.",
                file=sys.stderr,
            )
            return 1
        existing = parse_env(args.output.read_text(encoding="utf-8"), str(args.output))
    text = render_env(template, existing)
    write_private(args.output, text)
    added = sorted(set(parse_env(text)) - set(existing))
    print(f"wrote {args.output} (mode 600); new variables: {', '.join(added) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
