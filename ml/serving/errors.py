"""Error answers and error logs that carry no request input.

A request's input can hold a raw shopper id (a path segment, a `user_id` anywhere in a body, a body key),
and input the JSON encoder cannot write (NaN, infinities, unpaired surrogates). So:
- a 422 names the field (its location) and what was expected (pydantic's message), never the input: no
  `input`, no `ctx`, and a location part the client made up (an unknown body key) is replaced by
  `UNEXPECTED_FIELD`. FastAPI's own handler echoed the input, which made a 10 MB body a 10 MB answer, and
  failed (a 500) on input JSON cannot encode;
- an unexpected exception is logged as its type and its stack frames (file, line, function), without its
  message or the exceptions it chained from: those can carry the input (a RequestValidationError's text
  holds every input value). The client gets a plain 500;
- log lines name a route by its template (`/recommendations/{user_id}`), never by the path requested.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

UNEXPECTED_FIELD = "(unexpected field)"
# where FastAPI says an error is (the first location part)
SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def safe_loc(loc: Iterable[Any], known_fields: Collection[str]) -> list[str | int]:
    """The location with every part the client chose (a key that is not a known field) replaced."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(part)
        elif isinstance(part, str) and (part in SOURCES or part in known_fields):
            out.append(part)
        else:
            out.append(UNEXPECTED_FIELD)
    return out


def validation_detail(errors: Iterable[Mapping[str, Any]], known_fields: Collection[str]) -> list[dict[str, Any]]:
    """FastAPI's 422 `detail` list without the input: location, message and error type of each error."""
    return [
        {
            "loc": safe_loc(error.get("loc", ()), known_fields),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def json_body(content: Any) -> bytes:
    """JSON that always encodes: ASCII-escaped (an unpaired surrogate becomes its escape), no NaN."""
    return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_body(content), status_code=status, media_type="application/json", headers=headers)


def validation_handler(known_fields: Collection[str]):  # noqa: ANN201 (Starlette's handler signature)
    """The app's RequestValidationError handler: `validation_detail` of the errors, as a 422."""

    async def handle(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return error_response(422, {"detail": validation_detail(errors, known_fields)})

    return handle


def route_template(path: str, templates: Mapping[str, str]) -> str:
    """The route a path belongs to, as its template (`templates`: path prefix -> template), or "(other)"."""
    for prefix, template in templates.items():
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return template
    return "(other)"


def frames_only(exc: BaseException) -> str:
    """The exception's type and its stack frames, without its message or chained exceptions' messages."""
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld: it may hold request input)\n" + "".join(
        frames
    )


def log_unexpected(method: str, route: str, exc: BaseException) -> None:
    log.error("%s %s failed with an unexpected error:\n%s", method, route, frames_only(exc))
