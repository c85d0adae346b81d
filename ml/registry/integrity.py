"""Artifact integrity: the SHA-256 of every file of a model version, recorded at registration, checked before loading.

A registered version's files live in an artifact store that other people and processes can write to. A file
changed after the gate judged it (an item bias raised so one item tops every list, say) is a model nobody
vetted. So registration records each file's digest in the version's tags (`artifact.sha256.<relative
path>`, plus `artifact.sha256` over the whole list), and every loader (the gate's smoke test, serving,
rollback) recomputes them on the downloaded folder and refuses on any difference: a changed, missing or
extra file, or a version with no digests at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

MANIFEST_TAG = "artifact.sha256"
FILE_TAG_PREFIX = "artifact.sha256."
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """A model version's files differ from the digests recorded when it was registered."""


def file_digest(path: Path) -> str:
    """The SHA-256 of one file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative path (posix): SHA-256} for every file under `folder`, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IntegrityError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): file_digest(p) for p in files}


def manifest_digest(digests: Mapping[str, str]) -> str:
    """One SHA-256 over the sorted (path, digest) list: changes when any file, or the set of files, changes."""
    canonical = json.dumps(sorted(digests.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def digest_tags(folder: Path) -> dict[str, str]:
    """The version tags that record `folder`'s contents: one per file and one over the whole list."""
    digests = folder_digests(folder)
    if not digests:
        raise IntegrityError(f"{folder} holds no files to record")
    tags = {f"{FILE_TAG_PREFIX}{path}": digest for path, digest in digests.items()}
    tags[MANIFEST_TAG] = manifest_digest(digests)
    return tags


def recorded_digests(tags: Mapping[str, str]) -> dict[str, str]:
    """The per-file digests recorded in a version's tags ({} when none were recorded)."""
    return {k[len(FILE_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(FILE_TAG_PREFIX)}


def verify_folder(folder: Path, tags: Mapping[str, str], what: str = "model") -> str:
    """Check `folder` against the digests in `tags`; return the manifest digest, or raise IntegrityError.

    Refuses a version with no recorded digests too: a version nobody can check is not loaded."""
    expected = recorded_digests(tags)
    if not expected or MANIFEST_TAG not in tags:
        raise IntegrityError(
            f"{what}: no artifact digests recorded ({MANIFEST_TAG!r} tags); it cannot be verified, "
            "so it is not loaded. Re-register it from its run."
        )
    if manifest_digest(expected) != tags[MANIFEST_TAG]:
        raise IntegrityError(f"{what}: the per-file digest tags do not add up to {MANIFEST_TAG}; the tags were edited")
    actual = folder_digests(folder)
    changed = sorted(p for p in expected.keys() & actual.keys() if expected[p] != actual[p])
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    if changed or missing or extra:
        parts = []
        if changed:
            parts.append(f"changed: {', '.join(changed)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if extra:
            parts.append(f"not registered: {', '.join(extra)}")
        raise IntegrityError(
            f"{what}: artifacts differ from the digests recorded at registration ({'; '.join(parts)});"
            " refusing to load it"
        )
    return tags[MANIFEST_TAG]
