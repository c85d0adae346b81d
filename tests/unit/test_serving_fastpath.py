"""`plain_request` and `plain_search`: which recommendation and search requests the service may answer past
FastAPI's routing. A request taken there must be one FastAPI's route accepts as it is; anything else must be left
to FastAPI."""

from __future__ import annotations

import pytest

from ml.serving.fastpath import PLAIN_SEARCH_BYTES, plain_request, plain_search
from ml.serving.schemas import DEFAULT_K, MAX_K, MAX_QUERY_CHARS, MAX_USER_ID_CHARS, SearchRequest

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


# ------------------------------------------------------------------------------------------------ /search
JSON_HEADERS = [(b"host", b"x"), (b"x-api-key", KEY.encode()), (b"content-type", b"application/json")]


def _search_scope(headers=None, **extra) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/search",
        "query_string": b"",
        "headers": JSON_HEADERS if headers is None else headers,
        "root_path": "",
        **extra,
    }


LARGE_BODY = b'{"query": "' + b"\\u00e9" * MAX_QUERY_CHARS + b'"}'
assert len(LARGE_BODY) > PLAIN_SEARCH_BYTES and SearchRequest.model_validate_json(LARGE_BODY)
PLAIN_BODIES = [
    (b'{"query": "red shoe"}', ("red shoe", DEFAULT_K, None)),
    (b'{"query": "red shoe", "k": 7, "user_id": "alice"}', ("red shoe", 7, "alice")),
    (b'{"user_id": null, "query": " mug ", "k": 100}', (" mug ", 100, None)),
    ('{"query": "caf\u00e9 \u2615"}'.encode(), ("caf\u00e9 \u2615", DEFAULT_K, None)),
    (b'{"query": "caf\\u00e9", "k": 1}', ("caf\u00e9", 1, None)),
    (b'{"query": "shoe", "k": true}', ("shoe", 1, None)),  # pydantic's lax int, as the route reads it
    (b'{"query": "shoe", "k": 7.0}', ("shoe", 7, None)),
    (('{"query": "' + "a" * MAX_QUERY_CHARS + '"}').encode(), ("a" * MAX_QUERY_CHARS, DEFAULT_K, None)),
]
REFUSED_BODIES = [  # each one FastAPI's route answers with a 422
    b"",
    b"{",
    b"[]",
    b'"red shoe"',
    b"{}",
    b'{"query": ""}',
    b'{"query": "   "}',
    b'{"query": "shoe", "k": 0}',
    b'{"query": "shoe", "k": 101}',
    b'{"query": "shoe", "k": NaN}',
    b'{"query": "shoe", "k": Infinity}',
    b'{"query": "shoe", "k": 7.5}',
    b'{"query": "shoe", "k": "7x"}',
    b'{"query": "shoe", "user_id": ""}',
    b'{"query": "shoe", "user_id": 7}',
    b'{"query": "\\ud800"}',
    b'{"query": "shoe", "extra": 1}',
    b'{"query": ["shoe"]}',
    b'{"query": "shoe", "k": [[[[1]]]]}',
    b"\xff\xfe{}",
    ('{"query": "' + "a" * (MAX_QUERY_CHARS + 1) + '"}').encode(),
]


@pytest.mark.parametrize("body,expected", PLAIN_BODIES)
def test_plainly_valid_searches_are_taken(body, expected):
    request = plain_search(_search_scope(), body, KEY)
    assert request is not None and (request.query, request.k, request.user_id) == expected


@pytest.mark.parametrize("body", REFUSED_BODIES)
def test_searches_the_route_refuses_are_left_to_fastapi(body):
    assert plain_search(_search_scope(), body, KEY) is None


@pytest.mark.parametrize(
    "scope,body",
    [
        (_search_scope(method="PUT"), b'{"query": "shoe"}'),
        (_search_scope(path="/search/"), b'{"query": "shoe"}'),
        (_search_scope(query_string=b"k=3"), b'{"query": "shoe"}'),
        (_search_scope(root_path="/api"), b'{"query": "shoe"}'),
        (_search_scope(type="websocket"), b'{"query": "shoe"}'),
        (_search_scope(headers=JSON_HEADERS[:2]), b'{"query": "shoe"}'),  # no content type: FastAPI's to judge
        (_search_scope(headers=[*JSON_HEADERS[:2], (b"content-type", b"text/plain")]), b'{"query": "shoe"}'),
        (
            _search_scope(headers=[*JSON_HEADERS[:2], (b"content-type", b"application/merge-patch+json")]),
            b'{"query": "shoe"}',
        ),
        (_search_scope(headers=[*JSON_HEADERS, (b"content-type", b"application/json")]), b'{"query": "shoe"}'),
        (_search_scope(headers=[(b"content-type", b"application/json")]), b'{"query": "shoe"}'),  # no key: 401
        (_search_scope(headers=[(b"x-api-key", b"wrong-key-0123456789"), JSON_HEADERS[2]]), b'{"query": "shoe"}'),
        # valid but large (every character a JSON escape): FastAPI's
        (_search_scope(), LARGE_BODY),
    ],
)
def test_unusual_searches_are_left_to_fastapi(scope, body):
    assert plain_search(scope, body, KEY) is None


def _search_app(taken: list):
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse

    from ml.serving import errors
    from ml.serving.fastpath import ServiceApp

    app = ServiceApp()
    app.add_exception_handler(RequestValidationError, errors.validation_handler(frozenset(SearchRequest.model_fields)))

    async def answer(request: SearchRequest) -> bytes:
        taken.append(request)
        return b'{"from": "shortcut"}'

    app.fast_search = answer
    app.api_key = KEY

    @app.post("/search")
    def route(request: SearchRequest) -> PlainTextResponse:
        return PlainTextResponse("from the route")

    return app


@pytest.mark.parametrize("body", [b for b, _ in PLAIN_BODIES] + REFUSED_BODIES + [LARGE_BODY])
def test_the_search_shortcut_takes_exactly_what_the_route_accepts(body):
    """Every body above, through the app: the shortcut answers it when FastAPI's route would accept it (200),
    and FastAPI answers it (422) when not."""
    from fastapi.testclient import TestClient

    taken: list = []
    app = _search_app(taken)
    headers = {"X-API-Key": KEY, "content-type": "application/json"}
    with TestClient(app) as client:
        fast = client.post("/search", content=body, headers=headers)
        app.fast_search = None
        routed = client.post("/search", content=body, headers=headers)
    assert routed.status_code in (200, 422)
    if body == LARGE_BODY:  # valid, but FastAPI's
        assert routed.status_code == fast.status_code == 200 and fast.text == "from the route" and taken == []
    elif routed.status_code == 200:
        assert fast.json() == {"from": "shortcut"} and len(taken) == 1
    else:
        assert fast.status_code == 422 and fast.json() == routed.json() and taken == []
