"""The text of an HTML page to scan: its visible text and the strings of its JSON data scripts.

An HTML page is read by its visible text and its JSON data payloads (an Evidently report embeds a
multi-megabyte JavaScript bundle whose code is library code, not data, and is skipped). The page is read as a
stream, in chunks of 4 windows of ``text_scan.WINDOW_CHARS`` (read when used: one window size for every reader),
so memory stays bounded whatever its size.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from html import unescape

from ml.privacy import text_scan
from ml.privacy.text_scan import Unit, string_units, text_units

_OPEN_TAG = re.compile(r"<(script|style)\b", re.IGNORECASE)
_ANY_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_DATA_SCRIPT = re.compile(r"\s*(?:(?:var|let|const)\s+[\w$.]+\s*=\s*|window\.[\w$.]+\s*=\s*)?[\[{\"]")
_JSON_TYPE = re.compile(r"""type\s*=\s*["']?application/(?:ld\+)?json""", re.IGNORECASE)
_JSON_STRING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"')
MAX_STRING_CHARS = 1024 * 1024


def _visible(html: str) -> str:
    """Text outside tags, keeping line structure (a tag becomes a space plus its newlines)."""
    return unescape(_ANY_TAG.sub(lambda m: " " + "\n" * m.group().count("\n"), html))


class _JsonStrings:
    """Streams the string literals out of a JSON (or JSON-assignment) payload, with their line numbers."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.pending = ""

    def feed(self, data: str, final: bool) -> Iterator[tuple[int, str]]:
        s = self.pending + data
        self.pending = ""
        pos = 0
        while True:
            q = s.find('"', pos)
            if q == -1:
                self.line += s.count("\n", pos)
                return
            self.line += s.count("\n", pos, q)
            m = _JSON_STRING.match(s, q)
            if m is None:
                nl = s.find("\n", q)
                if nl == -1 and not final and len(s) - q < MAX_STRING_CHARS:
                    self.pending = s[q:]  # the string continues in the next chunk
                    return
                pos = q + 1  # an unterminated quote: skip it
                continue
            raw = m.group()
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw[1:-1]
            yield self.line, value
            pos = m.end()


class _HtmlSplitter:
    """Splits an HTML stream into visible text and the strings of JSON data scripts; skips code and styles."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buf = ""
        self.line = 1
        self.mode = "html"  # html | undecided | data | skip
        self.end_tag = "</script"
        self.strings: _JsonStrings | None = None

    def _visible_units(self, html: str) -> Iterator[Unit]:
        text = _visible(html)
        if text.strip():
            yield from text_units(io.StringIO(text).read, self.path, self.line)
        self.line += html.count("\n")

    def feed(self, chunk: str, eof: bool) -> Iterator[Unit]:
        self.buf += chunk
        while self.buf:
            buf = self.buf
            if self.mode == "html":
                m = _OPEN_TAG.search(buf)
                if m:
                    gt = buf.find(">", m.end())
                    if gt == -1 and not eof:
                        return
                    gt = len(buf) - 1 if gt == -1 else gt
                    yield from self._visible_units(buf[: m.start()])
                    tag = buf[m.start() : gt + 1]
                    self.line += tag.count("\n")
                    self.buf = buf[gt + 1 :]
                    is_style = m.group(1).lower() == "style"
                    self.end_tag = "</style" if is_style else "</script"
                    if is_style or re.search(r"\bsrc\s*=", tag, re.IGNORECASE):
                        self.mode = "skip"
                    elif _JSON_TYPE.search(tag):
                        self.mode, self.strings = "data", _JsonStrings(self.line)
                    else:
                        self.mode = "undecided"
                    continue
                lt = buf.rfind("<")  # hold back a tag that may continue in the next chunk
                cut = len(buf) if eof or lt == -1 or len(buf) - lt > text_scan.WINDOW_CHARS else lt
                if cut == 0:
                    return
                yield from self._visible_units(buf[:cut])
                self.buf = buf[cut:]
            elif self.mode == "undecided":
                if not eof and len(buf.lstrip()) < 256 and self.end_tag not in buf.lower():
                    return
                if _DATA_SCRIPT.match(buf):
                    self.mode, self.strings = "data", _JsonStrings(self.line)
                else:
                    self.mode = "skip"
            else:  # data or skip, up to the closing tag
                end = buf.lower().find(self.end_tag)
                if end == -1:
                    keep = 0 if eof else len(self.end_tag)
                    if len(buf) <= keep:
                        return
                    body, self.buf = buf[: len(buf) - keep], buf[len(buf) - keep :]
                else:
                    body, self.buf = buf[:end], buf[end:]
                done = end != -1 or eof
                if self.mode == "data" and self.strings is not None:
                    for at, value in self.strings.feed(body, final=done):
                        if value:
                            yield from string_units(value, f"{self.path}:{at}")
                self.line += body.count("\n")
                if done:
                    self.mode, self.strings = "html", None
                if end == -1 and not eof:
                    return


def html_units(read: Callable[[int], str], path: str) -> Iterator[Unit]:
    """Units of an HTML page: its visible text and the strings of its JSON data scripts."""
    splitter = _HtmlSplitter(path)
    while True:
        chunk = read(text_scan.WINDOW_CHARS * 4)
        yield from splitter.feed(chunk, eof=not chunk)
        if not chunk:
            return
