"""The request body cap: a body over `MAX_BODY_BYTES` gets a 413 before the app reads it.

The largest valid request, a /search body with the longest query and user id written as JSON escapes,
is under half of the cap (`ml.serving.schemas.MAX_BODY_BYTES`). A declared `Content-Length` over the cap
is refused before a byte of the body is read; a body without one (chunked) is read up to the cap and
refused as soon as it passes it. Either way the service never holds more than the cap of one request's
body, and never parses it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"


class BodyTooLarge(Exception):
    """The body passed the cap (or declared it would)."""


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length header's value, or None when the request declares none (or a malformed one:
    the HTTP server has refused those already)."""
    for name, value in headers:
        if name == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def may_have_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a body follows: a Content-Length above 0 or a Transfer-Encoding (HTTP/1.1's only two ways)."""
    for name, value in headers:
        if name == _TRANSFER_ENCODING:
            return True
        if name == _CONTENT_LENGTH:
            return value.strip() not in (b"", b"0")
    return False


async def read_capped(receive: Receive, limit: int) -> bytes:
    """The whole body, read from `receive` until its last part; BodyTooLarge as soon as it passes `limit`,
    ClientGone when the client disconnects first."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read as one message, then what `receive` gives (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
