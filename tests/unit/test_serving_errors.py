"""Bad requests get a 4xx that echoes nothing, bodies are capped, and no raw shopper id reaches a log.

No model is needed: validation, the body cap and authentication answer before the champion is asked for.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from ml.config import Settings
from ml.serving import errors, limits
from ml.serving.auth import API_KEY_ENV
from ml.serving.schemas import MAX_BODY_BYTES, MAX_QUERY_CHARS, MAX_USER_ID_CHARS
from ml.serving.watcher import fallback_order

API_KEY = "test-api-key-0123456789abcdef"
ENV = {API_KEY_ENV: API_KEY, "VETTED_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef"}
JSON = {"X-API-Key": API_KEY, "content-type": "application/json"}
RAW = "shopper-RAW-7f3a"  # a raw id planted in requests: it must appear in no answer and no log line


def server_log(caplog) -> str:
    """What the service logged (the test client's own request lines, with the URL it sent, left out)."""
    return "\n".join(caplog.handler.format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from ml.serving.app import create_app

    home = tmp_path_factory.mktemp("errors")
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=(home / "a").as_uri())
    app = create_app(settings, poll_seconds=3600, env=ENV)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


BAD_BODIES = [
    ('{"query": "shoe", "k": NaN}', ["body", "k"], "finite number"),
    ('{"query": "shoe", "k": Infinity}', ["body", "k"], "finite number"),
    ('{"query": "shoe", "k": -Infinity}', ["body", "k"], "finite number"),
    ('{"query": "shoe", "k": 1e400}', ["body", "k"], "finite number"),
    ('{"query": "\\ud800"}', ["body", "query"], "unicode"),
    ('{"query": "shoe", "user_id": "' + RAW + '\\udfff"}', ["body", "user_id"], "unicode"),
    ('[{"user_id": "' + RAW + '", "query": "shoe"}]', ["body"], "valid dictionary"),
    ('[{"user_id": "' + RAW + '", "k": NaN}]', ["body"], "valid dictionary"),
    ('{"query": "shoe", "user_id": ["' + RAW + '"]}', ["body", "user_id"], "valid string"),
    ('{"query": "shoe", "' + RAW + '": 1}', ["body", errors.UNEXPECTED_FIELD], "Extra inputs"),
    ('{"query": "shoe", "k": 100000000000000000000000000}', ["body", "k"], "less than or equal to 100"),
    ('{"query": "shoe", "k": [[[[1]]]]}', ["body", "k"], "valid integer"),
]


@pytest.mark.parametrize(("body", "loc", "message"), BAD_BODIES)
def test_bad_search_bodies_get_a_422_naming_the_field_without_the_input(client, caplog, body, loc, message):
    with caplog.at_level(logging.DEBUG):
        got = client.post("/search", content=body, headers=JSON)
    assert got.status_code == 422, got.text
    detail = got.json()["detail"]
    assert any(d["loc"] == loc and message in d["msg"] for d in detail), detail
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)  # no "input", no "ctx"
    assert RAW not in got.text and "ud800" not in got.text.lower()
    assert RAW not in server_log(caplog)


def test_a_huge_body_is_refused_with_a_small_413_before_it_is_read(client):
    huge = '{"query": "' + "x" * 10_000_000 + '"}'
    got = client.post("/search", content=huge, headers=JSON)
    assert got.status_code == 413 and len(got.content) < 300
    assert str(MAX_BODY_BYTES) in got.json()["detail"]

    # streamed (chunked, no Content-Length): read only up to the cap, then refused
    def stream():
        for _ in range(1000):
            yield b"x" * 1024

    got = client.post("/search", content=stream(), headers=JSON)
    assert got.status_code == 413
    assert RAW not in got.text
    # an unauthenticated huge body is refused the same way (the cap comes before anything else)
    assert client.post("/search", content=huge, headers={"content-type": "application/json"}).status_code == 413


def test_the_largest_valid_search_body_is_under_the_cap(client):
    """Every character of the longest query and user id as a JSON surrogate-pair escape (12 bytes each)."""
    emoji = "\\ud83d\\ude00"
    body = '{"query": "' + emoji * MAX_QUERY_CHARS + '", "k": 100, "user_id": "' + emoji * MAX_USER_ID_CHARS + '"}'
    assert len(body.encode()) < MAX_BODY_BYTES
    got = client.post("/search", content=body, headers=JSON)
    assert got.status_code == 503  # past validation and the cap: only the missing model stops it


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/search", {"content": "{not json", "headers": JSON}, 422),
        ("post", "/search", {"content": "[" * 5000 + "]" * 5000, "headers": JSON}, 400),
        ("post", "/search", {"content": "query=shoe", "headers": {**JSON, "content-type": "text/plain"}}, 422),
        ("post", "/search", {"content": b"\xff\xfe\x00", "headers": JSON}, 400),
        ("get", f"/recommendations/{RAW}", {"params": {"k": "NaN"}, "headers": JSON}, 422),
        ("get", f"/recommendations/{RAW}", {"params": {"k": "1e400"}, "headers": JSON}, 422),
        ("get", f"/recommendations/{RAW}%ED%A0%80", {"params": {"k": 0}, "headers": JSON}, 422),
        ("get", f"/recommendations/{RAW}", {}, 401),
        ("get", f"/recommendations/{RAW}", {"headers": {"X-API-Key": "wrong-key-0123456789"}}, 403),
        ("delete", f"/recommendations/{RAW}", {"headers": JSON}, 405),
        ("get", f"/users/{RAW}", {"headers": JSON}, 404),
        ("put", "/search", {"content": "{}", "headers": JSON}, 405),
    ],
)
def test_other_bad_requests_are_4xx_and_leave_no_raw_id_anywhere(client, caplog, method, path, kwargs, status):
    with caplog.at_level(logging.DEBUG):
        got = client.request(method.upper(), path, **kwargs)
    assert got.status_code == status, got.text
    assert RAW not in got.text and RAW not in server_log(caplog)


def test_an_unexpected_error_is_a_500_logged_without_its_message(client, caplog, monkeypatch):
    """An exception's message can hold request input (here the raw id): the log keeps its type and frames."""
    service = client.app.state.service

    def broken(user_id: str) -> str:
        raise RuntimeError(f"cannot hash {user_id}")

    monkeypatch.setattr(service, "champion", lambda: object())  # past the 503: the route goes on
    monkeypatch.setattr(service, "pseudonymizer", SimpleNamespace(pseudonym=broken))
    with caplog.at_level(logging.DEBUG):
        got = client.post("/search", json={"query": "shoe", "user_id": RAW}, headers=JSON)
    assert got.status_code == 500 and RAW not in got.text
    logged = server_log(caplog)
    assert "RuntimeError" in logged and "POST /search" in logged and "broken" in logged
    assert RAW not in logged and f"cannot hash {RAW}" not in logged


def test_healthz_shows_no_error_text_and_version_shows_it_with_the_key(client):
    health = client.get("/healthz")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert not {"last_error", "feature_store_error", "privacy_requests_error"} & set(body)
    assert "/" not in json.dumps({k: v for k, v in body.items() if k != "last_checked"})
    assert client.get("/version").status_code == 401
    got = client.get("/version", headers=JSON)
    assert got.status_code == 503 and "vetted-recsys@champion" in got.json()["detail"]


def test_safe_loc_keeps_known_names_and_positions_only():
    assert errors.safe_loc(("body", "k"), {"k"}) == ["body", "k"]
    assert errors.safe_loc(("body", "alice", 3, True), {"k"}) == [
        "body",
        errors.UNEXPECTED_FIELD,
        3,
        "(unexpected field)",
    ]
    detail = errors.validation_detail([{"loc": ("body",), "msg": "m", "type": "t", "input": RAW, "ctx": {}}], set())
    assert detail == [{"loc": ["body"], "msg": "m", "type": "t"}]
    assert json.loads(errors.json_body({"x": "\ud800"})) == {"x": "\ud800"}  # encodes, never raises
    assert errors.route_template("/recommendations/alice", {"/recommendations/": "/r/{id}"}) == "/r/{id}"
    assert errors.route_template("/alice", {"/recommendations/": "/r/{id}", "/search": "/search"}) == "(other)"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        ([(b"content-length", b"0")], False),
        ([(b"content-length", b"12")], True),
        ([(b"transfer-encoding", b"chunked")], True),
    ],
)
def test_may_have_body(headers, expected):
    assert limits.may_have_body(headers) is expected


def test_read_capped_stops_at_the_cap_and_replays_what_it_read():
    import asyncio

    def receiver(parts, disconnect=False):
        queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        if disconnect:
            queue = queue[:-1] + [{"type": "http.disconnect"}]
        calls = []

        async def receive():
            calls.append(1)
            return queue[len(calls) - 1]

        return receive, calls

    receive, calls = receiver([b"ab", b"cd", b"ef"])
    assert asyncio.run(limits.read_capped(receive, 6)) == b"abcdef"
    receive, calls = receiver([b"ab", b"cd", b"ef", b"gh"])
    with pytest.raises(limits.BodyTooLarge):
        asyncio.run(limits.read_capped(receive, 5))
    assert len(calls) == 3  # stopped at the part that passed the cap, the rest never read
    receive, _ = receiver([b"ab", b"cd"], disconnect=True)
    with pytest.raises(limits.ClientGone):
        asyncio.run(limits.read_capped(receive, 100))

    async def after():
        again = limits.replay(b"xyz", receiver([b"", b""], disconnect=True)[0])
        return await again(), await again()

    first, second = asyncio.run(after())
    assert first == {"type": "http.request", "body": b"xyz", "more_body": False}
    assert second == {"type": "http.request", "body": b"", "more_body": True}  # then the transport's own


def test_fallback_order_is_gate_passed_versions_newest_first():
    versions = [
        ("1", {"gate.status": "passed"}),
        ("2", {"gate.status": "failed"}),
        ("3", {"gate.status": "approved"}),
        ("4", {"gate.status": "pending_approval"}),
        ("10", {"gate.status": "passed"}),
        ("11", {}),
        ("12", {"gate.status": "passed"}),
    ]
    assert fallback_order(versions, exclude={"12"}) == ["10", "3", "1"]
    assert fallback_order(versions, exclude=set()) == ["12", "10", "3", "1"]
    assert fallback_order([("1", {"gate.status": "rejected"})], exclude=set()) == []
