"""The shortcut for plainly valid recommendation requests, past FastAPI's routing and parameter solving.

Under load the event loop's Python is what limits the service (one thread holds the GIL), and for a
recommendation half of it was FastAPI's and Starlette's own work around the endpoint: the middleware
layers, the router, solving the route's dependency and parameters (with typing introspection on every
request), and the response object. `plain_request` recognises the requests that route would accept as
they are: GET /recommendations/<id> with an id of ordinary characters, no query or `k=<1..MAX_K>` alone,
and exactly one `X-API-Key` header that matches. `ServiceApp` answers those itself, with the same
function the route calls, so both give the same answer. Anything else, valid or not (a percent-encoded
or very long id, another parameter, a missing or wrong key, no champion yet), goes through FastAPI
unchanged: its 4xx bodies and the OpenAPI document stay the one reference for the API.

Searches likewise (`plain_search`): POST /search with no query, exactly one matching `X-API-Key`, one
`Content-Type: application/json`, and a small body (at most `PLAIN_SEARCH_BYTES`) that FastAPI would accept as
it is. The body is read as FastAPI reads it (`json.loads` of the bytes, then `SearchRequest`'s validation of the
object), so the two cannot disagree on what is valid; a body either step refuses, or anything else unusual, is
not judged here: it goes to FastAPI, whose 422 (or 401, 403, 413) is the answer.

`ServiceApp` is also where every request passes before anything else, so two guards live here, around
both paths: the body cap (`ml.serving.limits`: 413 before the body is read), and the last word on an
unexpected exception (`ml.serving.errors`: logged as its type and frames only, never its message, which
can hold request input; the client gets a 500). Starlette logs nothing itself; the exception it re-raises
after answering stops here, so uvicorn's own traceback log, which would print the message, never sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from ml.serving import errors, limits
from ml.serving.auth import API_KEY_HEADER, key_matches
from ml.serving.schemas import DEFAULT_K, MAX_BODY_BYTES, MAX_K, MAX_USER_ID_CHARS, SearchRequest

PREFIX = "/recommendations/"
# ids that pass the route's checks (1 to MAX_USER_ID_CHARS characters, not only spaces) at a glance;
# other ids are not refused, they take FastAPI's path
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~@+:=-]+")
_K_ONLY = re.compile(rb"k=([0-9]{1,4})")
_KEY_HEADER = API_KEY_HEADER.lower().encode("latin-1")
SEARCH_PATH = "/search"
# the largest /search body taken here: a query and a user id of ordinary length fit many times over; longer
# ones (up to the body cap) are valid too, and FastAPI answers them
PLAIN_SEARCH_BYTES = 2048
_CONTENT_TYPE = b"content-type"
_JSON = b"application/json"

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
# answers (user_id, k) with the response body, or None when it cannot (say, no champion yet)
Answer = Callable[[str, int], Awaitable[bytes | None]]
# answers a search request with the response body, or None when it cannot
SearchAnswer = Callable[[SearchRequest], Awaitable[bytes | None]]


def plain_request(scope: Scope, api_key: str) -> tuple[str, int] | None:
    """(user_id, k) when `scope` is a request the recommendations route would accept as it is, else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
        return None
    path = scope["path"]
    if not path.startswith(PREFIX):
        return None
    user_id = path[len(PREFIX) :]
    if len(user_id) > MAX_USER_ID_CHARS or not _PLAIN_ID.fullmatch(user_id):
        return None
    query = scope["query_string"]
    if not query:
        k = DEFAULT_K
    else:
        match = _K_ONLY.fullmatch(query)
        if match is None:
            return None
        k = int(match[1])
        if not 1 <= k <= MAX_K:
            return None
    if not _key_given(scope, api_key):
        return None
    return user_id, k


def plain_search(scope: Scope, body: bytes, api_key: str) -> SearchRequest | None:
    """The request the search route would accept as it is (`scope` with its whole `body`), else None."""
    if (
        scope["type"] != "http"
        or scope["method"] != "POST"
        or scope.get("root_path")
        or scope["path"] != SEARCH_PATH
        or scope["query_string"]
        or not body
        or len(body) > PLAIN_SEARCH_BYTES
    ):
        return None
    content_types = [value for name, value in scope["headers"] if name == _CONTENT_TYPE]
    if content_types != [_JSON] or not _key_given(scope, api_key):
        return None
    try:  # as FastAPI reads a JSON body: the stdlib's json.loads of the bytes, then the model's validation
        return SearchRequest.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _key_given(scope: Scope, api_key: str) -> bool:
    """Exactly one `X-API-Key` header, and it matches."""
    given = [value for name, value in scope["headers"] if name == _KEY_HEADER]
    return len(given) == 1 and key_matches(given[0].decode("latin-1"), api_key)  # as Starlette decodes it


class ServiceApp(FastAPI):
    """The service's FastAPI app, with `plain_request`'s requests answered by `fast_answer` and `plain_search`'s
    by `fast_search` directly (both set by `ml.serving.app.create_app`); every other request, and every other
    scope, is FastAPI's, and so is every request once middleware has been added to the app."""

    fast_answer: Answer | None = None
    fast_search: SearchAnswer | None = None
    api_key: str = ""

    def __init__(
        self,
        *args: Any,
        max_body_bytes: int = MAX_BODY_BYTES,
        routes_for_logs: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_body_bytes = max_body_bytes
        self.routes_for_logs = dict(routes_for_logs or {})

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._answer(scope, receive, tracked)
        except Exception as err:
            errors.log_unexpected(scope["method"], errors.route_template(scope["path"], self.routes_for_logs), err)
            if not started:  # Starlette answers before re-raising; this is for what happens outside it
                await _send(send, 500, errors.json_body({"detail": "internal error"}))

    async def _answer(self, scope: Scope, receive: Any, send: Send) -> None:
        headers = scope["headers"]
        declared = limits.declared_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send)
            return
        body = b""
        if limits.may_have_body(headers):
            try:
                body = await limits.read_capped(receive, self.max_body_bytes)
            except limits.BodyTooLarge:
                await self._too_large(send)
                return
            except limits.ClientGone:
                return
            receive = limits.replay(body, receive)
        # middleware added to the app (CORS, metrics, ...) must see every request: no shortcut then
        if not self.user_middleware:
            answer = await self._shortcut(scope, body)
            if answer is not None:
                await _send(send, 200, answer)
                return
        await super().__call__(scope, receive, send)

    async def _shortcut(self, scope: Scope, body: bytes) -> bytes | None:
        """The body of the shortcut's answer, or None when FastAPI is to answer."""
        if self.fast_answer is not None:
            request = plain_request(scope, self.api_key)
            if request is not None:
                return await self.fast_answer(*request)
        if self.fast_search is not None:
            search = plain_search(scope, body, self.api_key)
            if search is not None:
                return await self.fast_search(search)
        return None

    async def _too_large(self, send: Send) -> None:
        detail = (
            f"the request body is over {self.max_body_bytes} bytes: send a smaller one (see the API's documentation)"
        )
        await _send(send, 413, errors.json_body({"detail": detail}), close=True)


async def _send(send: Send, status: int, body: bytes, close: bool = False) -> None:
    """One whole JSON response; `close` asks the client to close the connection (its body may be unread)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
