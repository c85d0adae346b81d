"""`plain_request`: which recommendation requests the service may answer past FastAPI's routing. A request
taken there must be one FastAPI's route accepts as it is; anything else must be left to FastAPI."""

from __future__ import annotations

import pytest

from ml.serving.fastpath import plain_request
from ml.serving.schemas import DEFAULT_K, MAX_K, MAX_USER_ID_CHARS

KEY = "test-api-key-0123456789abcdef"


def _scope(path: str = "/recommendations/alice", query: bytes = b"", headers=None, **extra) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": [(b"host", b"x"), (b"x-api-key", KEY.encode())] if headers is None else headers,
        "root_path": "",
        **extra,
    }


@pytest.mark.parametrize(
    "scope,expected",
    [
        (_scope(), ("alice", DEFAULT_K)),
        (_scope(query=b"k=7"), ("alice", 7)),
        (_scope(query=f"k={MAX_K}".encode()), ("alice", MAX_K)),
        (_scope(query=b"k=007"), ("alice", 7)),  # FastAPI's int reads it as 7 too
        (_scope("/recommendations/u_9.x-y@shop.example"), ("u_9.x-y@shop.example", DEFAULT_K)),
        (_scope("/recommendations/" + "a" * MAX_USER_ID_CHARS), ("a" * MAX_USER_ID_CHARS, DEFAULT_K)),
    ],
)
def test_plainly_valid_requests_are_taken(scope, expected):
    assert plain_request(scope, KEY) == expected


@pytest.mark.parametrize(
    "scope",
    [
        _scope(query=b"k=0"),  # out of range: FastAPI's 422
        _scope(query=f"k={MAX_K + 1}".encode()),
        _scope(query=b"k=-3"),
        _scope(query=b"k=abc"),
        _scope(query=b"k=7&k=8"),  # repeated or other parameters: FastAPI's reading
        _scope(query=b"k=7&debug=1"),
        _scope(query=b"q=1"),
        _scope("/recommendations/"),  # no id: FastAPI's 404
        _scope("/recommendations/" + "a" * (MAX_USER_ID_CHARS + 1)),  # too long: 422
        _scope("/recommendations/   "),  # blank: 422
        _scope("/recommendations/alice/"),  # another route (none)
        _scope("/recommendations/al ice"),  # unusual characters: valid, but FastAPI's to judge
        _scope("/recommendations/ålice"),
        _scope("/version"),
        _scope(method="POST"),
        _scope(type="websocket"),
        _scope(root_path="/api"),
        _scope(headers=[(b"host", b"x")]),  # no key: 401
        _scope(headers=[(b"x-api-key", b"wrong-key-0123456789")]),  # wrong key: 403
        _scope(headers=[(b"x-api-key", KEY.encode()), (b"x-api-key", b"other")]),  # two keys
    ],
)
def test_anything_else_is_left_to_fastapi(scope):
    assert plain_request(scope, KEY) is None


def _app_with_shortcut(taken: list[str]):
    from fastapi.responses import PlainTextResponse

    from ml.serving.fastpath import ServiceApp

    app = ServiceApp()

    async def answer(user_id: str, k: int) -> bytes:
        taken.append(user_id)
        return b'{"from": "shortcut"}'

    app.fast_answer = answer
    app.api_key = KEY

    @app.get("/recommendations/{user_id}")
    def route(user_id: str) -> PlainTextResponse:
        return PlainTextResponse("from the route")

    return app


def test_the_shortcut_answers_plain_requests_and_leaves_the_rest_to_the_routes():
    from fastapi.testclient import TestClient

    taken: list[str] = []
    client = TestClient(_app_with_shortcut(taken))
    fast = client.get("/recommendations/alice", headers={"X-API-Key": KEY})
    assert fast.status_code == 200 and fast.json() == {"from": "shortcut"}
    assert fast.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert client.get("/recommendations/al%20ice", headers={"X-API-Key": KEY}).text == "from the route"
    assert taken == ["alice"]


def test_no_shortcut_once_middleware_is_added():
    """Middleware added to the app (CORS, metrics, ...) must see every request."""
    from fastapi.testclient import TestClient
    from starlette.middleware.base import BaseHTTPMiddleware

    taken: list[str] = []
    seen: list[str] = []
    app = _app_with_shortcut(taken)

    async def record(request, call_next):  # type: ignore[no-untyped-def]
        seen.append(request.url.path)
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=record)
    got = TestClient(app).get("/recommendations/alice", headers={"X-API-Key": KEY})
    assert got.text == "from the route"
    assert seen == ["/recommendations/alice"] and taken == []
