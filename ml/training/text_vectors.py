"""The pretrained encoder's vectors of catalogue texts, kept on disk between stages and between runs.

A chain encodes its catalogue with the pretrained MiniLM at least twice: the train stage fills the item table a
model starts from (all of it, for a frozen text tower), and the evaluate stage builds the zero-shot baseline from
the same texts. A weekly retrain encodes the catalogue again though few items changed, and on 2 cores a 100,000-item
catalogue takes minutes per pass. The pretrained weights never change, so neither does a text's vector: the cache
keys each one by the weights' digest, the token limit and the text, and encodes only the texts it lacks.

Only catalogue texts (public item text) go in, never search queries: a query is a shopper's own words, which a
deletion request must be able to reach, and the cache is no place a deletion reaches.

Soundness:
- A file is read back only under the digest of the weights and tokenizer files that wrote it (another release of
  the weights gets its own file) and the same `max_tokens`.
- Before trusting a file, a few of its texts are encoded again and compared (`CHECKED`, within `TOLERANCE`): a
  change to the encoding code itself (pooling, truncation) that kept the digest is caught, and the file is rebuilt.
- Writes go to a temporary file renamed over the old one, so a reader never sees half a file. Two runs that add texts
  at once may each keep only their own additions (the last rename wins): the cost is a later re-encode, not an error.
- An unreadable file is renamed `*.bad` (kept for a look) and rebuilt, with a warning: the cache holds nothing that
  cannot be computed again.
- At most `MAX_ENTRIES` vectors a file: past it, the texts this call did not ask for are dropped, oldest first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CHECKED = 4  # cached texts encoded again before a file is trusted
TOLERANCE = 1e-4  # largest difference allowed there (unit vectors; batch padding moves the last float digits)
MAX_ENTRIES = 500_000  # vectors a file keeps (about 770 MB at MiniLM's 384 float32 dimensions)
_WEIGHT_FILES = ("model.safetensors", "tokenizer.json", "config.json")


@lru_cache(maxsize=4)
def _digest(folder: str, stamp: tuple[tuple[int, int], ...]) -> str:
    """sha256 over the weight, tokenizer and config files (the stamp, their sizes and mtimes, keys the memo)."""
    h = hashlib.sha256()
    for name in _WEIGHT_FILES:
        path = Path(folder) / name
        if path.exists():
            h.update(name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def weights_digest(folder: Path) -> str:
    """A short digest of the encoder's files in `folder` (computed once a process for unchanged files)."""
    paths = [Path(folder) / n for n in _WEIGHT_FILES]
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (-1, -1) for p in paths)
    return _digest(str(folder), stamp)


def text_key(text: str) -> bytes:
    """128 bits of the text's sha256, as hex (ASCII: numpy's fixed-width bytes drop trailing NUL bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


class TextVectors:
    """`encode(texts)`: each text's vector from the file where it is there and from `encoder` where not."""

    def __init__(self, folder: Path, digest: str, max_tokens: int) -> None:
        self.path = Path(folder) / f"{digest}-{int(max_tokens)}.npz"

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, dtype="S32"), np.zeros((0, 0), dtype=np.float32)
        if not self.path.exists():
            return empty
        try:
            with np.load(self.path) as data:
                keys, vectors = data["keys"], data["vectors"]
            if keys.dtype != np.dtype("S32") or vectors.ndim != 2 or len(keys) != len(vectors):
                raise ValueError(f"keys {keys.dtype} {keys.shape} and vectors {vectors.shape} do not match")
        except Exception as err:  # noqa: BLE001 - any unreadable file is set aside and rebuilt
            bad = self.path.with_suffix(".bad")
            log.warning("text-vector cache %s is unreadable (%s): moved to %s, encoding again", self.path, err, bad)
            os.replace(self.path, bad)
            return empty
        return keys, vectors.astype(np.float32, copy=False)

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.stem, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def encode(self, texts: Sequence[str], encoder: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """[len(texts), dim] float32 vectors in `texts` order; `encoder(list of texts)` is called for the texts
        the file lacks (each distinct text once, in first-seen order) and for the check of a file's vectors."""
        texts = [str(t) for t in texts]
        wanted = [text_key(t) for t in texts]
        keys, vectors = self._read()
        row_of = {k: i for i, k in enumerate(keys.tolist())}
        if row_of:
            sample = list(dict.fromkeys(t for t, k in zip(texts, wanted, strict=True) if k in row_of))[:CHECKED]
            if sample:
                fresh = np.asarray(encoder(sample), dtype=np.float32)
                stored = vectors[[row_of[text_key(t)] for t in sample]]
                if fresh.shape != stored.shape or float(np.abs(fresh - stored).max()) > TOLERANCE:
                    log.warning("text-vector cache %s disagrees with the encoder: encoding every text again", self.path)
                    keys, vectors, row_of = keys[:0], vectors[:0], {}
        missing = list(dict.fromkeys(t for t, k in zip(texts, wanted, strict=True) if k not in row_of))
        if missing:
            new = np.asarray(encoder(missing), dtype=np.float32)
            if new.ndim != 2 or len(new) != len(missing):
                raise ValueError(f"the encoder gave {new.shape} for {len(missing)} texts")
            if vectors.size == 0:
                vectors = np.zeros((0, new.shape[1]), dtype=np.float32)
            keys = np.concatenate([keys, np.array([text_key(t) for t in missing], dtype="S32")])
            vectors = np.concatenate([vectors, new])
            row_of = {k: i for i, k in enumerate(keys.tolist())}
            if len(keys) > MAX_ENTRIES:
                asked = set(wanted)
                others = [i for i, k in enumerate(keys.tolist()) if k not in asked]
                drop = set(others[: len(keys) - MAX_ENTRIES])
                keep = np.array([i for i in range(len(keys)) if i not in drop], dtype=np.int64)
                keys, vectors = keys[keep], vectors[keep]
                row_of = {k: i for i, k in enumerate(keys.tolist())}
            self._write(keys, vectors)
        if not texts:
            return np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
        return vectors[[row_of[k] for k in wanted]]


def catalogue_vectors(
    folder: Path | None, texts: Sequence[str], max_tokens: int, encoder: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """The pretrained encoder's vectors of catalogue `texts` through the cache in `folder` (None: no cache, every
    text encoded). `encoder` must be the pretrained encoder at `max_tokens`, not a fine-tuned one."""
    if folder is None:
        return np.asarray(encoder(list(texts)), dtype=np.float32)
    from ml.training.encoder import model_dir

    return TextVectors(folder, weights_digest(model_dir()), max_tokens).encode(texts, encoder)
