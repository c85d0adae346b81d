"""Scanning one file for PII and raw ids, read according to its kind (`file_kind`, `scan_file`).

Files are read by type: text-like files line by line in bounded windows; parquet by string column and row
batch; HTML by its visible text and its JSON data payloads (``ml.privacy.html_text``: an Evidently report embeds
a multi-megabyte JavaScript bundle whose code is library code, not data, and is skipped); binary files
(weights, indexes, pickles) only for raw ids, in overlapping chunks. Memory stays bounded by the chunk size
whatever the file. Parquet and CSV shopper-named columns are also compared whole against every raw id
(``ml.privacy.raw_ids``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ml.privacy.html_text import html_units
from ml.privacy.raw_ids import RawIdMatcher, is_shopper_field
from ml.privacy.text_scan import (
    RAW_ID,
    PIIFinding,
    Scrubber,
    Unit,
    fixed_location,
    scan_units,
    string_units,
    text_units,
)

BINARY_CHUNK = 4 * 1024 * 1024
PARQUET_BATCH_ROWS = 8192

TEXT_SUFFIXES = frozenset(
    ".json .jsonl .ndjson .csv .tsv .txt .md .yaml .yml .py .toml .cfg .ini .log .mlmodel .xml .sql".split()
)
TEXT_NAMES = frozenset({"MLmodel", "mlmodel", "Dockerfile", "LICENSE", "README"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
BINARY_SUFFIXES = frozenset(
    ".safetensors .pt .pth .bin .npy .npz .faiss .index .pkl .pickle .onnx .ckpt .h5 .db .sqlite .joblib".split()
)


def file_kind(path: Path) -> str:
    """How a file is read: "text", "html", "parquet" or "binary" (unknown files are sniffed)."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
        return "text"
    if suffix in BINARY_SUFFIXES:
        return "binary"
    with path.open("rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "binary"
    return "text"


# A saved encoder's tokenizer vocabulary maps words to indices ("user": 2034): the pretrained model's, never
# fitted to shoppers here, so a number after the word "user" there is a token index, not a shopper. With numeric
# shopper ids (amazon2018-games) the mention rule would flag it; these files still get every other check.
TOKENIZER_VOCABULARIES = frozenset({"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"})


def scan_file(path: Path, scrubber: Scrubber, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Findings in one file, read according to its kind."""
    kind = file_kind(path)
    if kind == "text":
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            yield from scan_units(
                text_units(fh.read, str(path)), scrubber, matcher, mentions=path.name not in TOKENIZER_VOCABULARIES
            )
        if path.suffix.lower() in (".csv", ".tsv"):
            yield from _scan_csv_shopper_columns(path, matcher)
    elif kind == "html":
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            yield from scan_units(html_units(fh.read, str(path)), scrubber, matcher)
    elif kind == "parquet":
        yield from _scan_parquet(path, scrubber, matcher)
    elif path.suffix.lower() == ".npy" and _npy_is_text(path):
        yield from _scan_npy_strings(path, matcher)
    else:
        yield from _scan_binary(path, matcher)


# --------------------------------------------------------------------------------------------- binary
def _scan_binary(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Raw ids in the bytes, in overlapping chunks (a match belongs to the chunk where it starts)."""
    if not matcher:
        return
    overlap = max(2 * (matcher.max_chars * 4 + 2), 64)
    half = overlap // 2
    chunk = max(BINARY_CHUNK, 2 * overlap)
    with path.open("rb") as fh:
        base = 0
        buf = fh.read(chunk)
        first = True
        while buf:
            nxt = fh.read(chunk - overlap)
            last = not nxt
            lo = 0 if first else half
            hi = len(buf) if last else len(buf) - half
            for start, end in matcher.find_bytes(buf):
                if lo <= start < hi:
                    yield PIIFinding(f"{path}@{base + start}", RAW_ID, f"<{RAW_ID}> ({end - start} bytes)")
            if last:
                return
            base += len(buf) - overlap
            buf = buf[-overlap:] + nxt
            first = False


def _scan_csv_shopper_columns(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """Whole values of a CSV's shopper-named columns (its text lines were scanned for token ids already)."""
    import csv

    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = next(reader, [])
        columns = [(k, name) for k, name in enumerate(header) if is_shopper_field(name)]
        if not columns:
            return
        for row_no, row in enumerate(reader):
            for k, name in columns:
                if k < len(row) and matcher.is_field_id(row[k]) and row[k].strip() not in matcher:
                    yield PIIFinding(f"{path}:{name}[{row_no}]", RAW_ID, f"<{RAW_ID}> (the whole value)")


def _npy_is_text(path: Path) -> bool:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return False
    return arr.dtype.kind in "US"


def _scan_npy_strings(path: Path, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    """A numpy array of strings stores them as UTF-32 or bytes: compare its values, not its bytes."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False).reshape(-1)
    for lo in range(0, arr.shape[0], 65536):
        for k, value in enumerate(arr[lo : lo + 65536].tolist()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for start, end in matcher.find(text):
                yield PIIFinding(f"{path}[{lo + k}]", RAW_ID, f"<{RAW_ID}> ({end - start} chars)")


# --------------------------------------------------------------------------------------------- parquet
def _scan_parquet(path: Path, scrubber: Scrubber, matcher: RawIdMatcher) -> Iterator[PIIFinding]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    schema = pfile.schema_arrow
    names = [f.name for f in schema]
    yield from scan_units([Unit(" ".join(names), fixed_location(f"{path}:<columns>"))], scrubber, matcher)

    def is_numeric(t: pa.DataType) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)

    text_cols = [f.name for f in schema if not is_numeric(f.type) and not pa.types.is_temporal(f.type)]
    shopper_cols = {f.name for f in schema if is_shopper_field(f.name)}
    int_cols = [
        f.name for f in schema if pa.types.is_integer(f.type) and (matcher.has_numeric or f.name in shopper_cols)
    ]
    if not text_cols and not int_cols:
        return
    row0 = 0
    for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=text_cols + int_cols):
        for name in text_cols:
            values = batch.column(name).to_pylist()

            def units(values: list[object] = values, name: str = name, first: int = row0) -> Iterator[Unit]:
                for k, value in enumerate(values):
                    if value is None:
                        continue
                    text = _cell_text(value)
                    if text:
                        yield from string_units(text, f"{path}:{name}[{first + k}]")

            yield from scan_units(units(), scrubber, matcher)
            if name in shopper_cols:
                yield from _whole_values(values, f"{path}:{name}", row0, matcher, skip_token_ids=True)
        for name in int_cols:
            values = batch.column(name).to_pylist()
            if name in shopper_cols:
                yield from _whole_values(values, f"{path}:{name}", row0, matcher, skip_token_ids=False)
                continue
            for k, value in enumerate(values):
                if value is not None and str(value) in matcher:
                    yield PIIFinding(f"{path}:{name}[{row0 + k}]", RAW_ID, f"<{RAW_ID}>")
        row0 += batch.num_rows


def _whole_values(
    values: Iterable[object], where: str, first: int, matcher: RawIdMatcher, skip_token_ids: bool
) -> Iterator[PIIFinding]:
    """Cells of a shopper column whose whole value is a raw id (the token scan already found token ids in text
    cells: `skip_token_ids`)."""
    for k, value in enumerate(values):
        if value is None or isinstance(value, list | dict | tuple):
            continue
        if matcher.is_field_id(value) and not (skip_token_ids and str(value).strip() in matcher):
            yield PIIFinding(f"{where}[{first + k}]", RAW_ID, f"<{RAW_ID}> (the whole value)")


def _cell_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return "\n".join(_cell_text(v) for v in value if v is not None)
    if isinstance(value, dict):
        return "\n".join(_cell_text(v) for v in value.values() if v is not None)
    return str(value)
