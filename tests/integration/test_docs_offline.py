"""/docs works without internet: every script, stylesheet and image it loads is served by the service itself,
and the examples name a real demo shopper instead of "string"."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from fastapi.testclient import TestClient

from ml.config import RunConfig, Settings
from ml.serving.auth import API_KEY_ENV
from ml.serving.docs import ASSETS
from ml.serving.schemas import DEMO_QUERY, DEMO_SHOPPER

ENV = {API_KEY_ENV: "test-api-key-0123456789abcdef", "VETTED_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef"}
ASSET_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|swagger_js_url)\s*:\s*["']([^"']+)["']""")


def _app(home: Path):
    from ml.serving.app import create_app

    settings = Settings(
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=(home / "mlartifacts").as_uri(),
        demo=False,
    )
    return create_app(settings, poll_seconds=60, env=ENV)


def test_docs_load_only_local_assets_and_each_one_answers(tmp_path):
    with TestClient(_app(tmp_path)) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        urls = [a or b for a, b in ASSET_URL.findall(page.text)]
        assets = [u for u in urls if u != "/openapi.json"]
        assert len(assets) >= 3, urls  # the bundle, the stylesheet, the icon
        for url in urls:
            parsed = urlparse(url)
            assert not parsed.scheme and not parsed.netloc and url.startswith("/"), f"{url} is not served here"
            got = client.get(url)
            assert got.status_code == 200 and got.content, url
        assert "cdn" not in page.text.lower()
        bundle = client.get("/docs-assets/swagger-ui-bundle.js")
        assert bundle.content == (ASSETS / "swagger-ui-bundle.js").read_bytes()
        assert client.get("/docs/oauth2-redirect").status_code == 200
        assert client.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN
        assert client.get("/docs-assets/../auth.py").status_code == 404


def test_the_licence_ships_with_the_assets():
    assert "Apache License" in (ASSETS / "LICENSE").read_text()
    assert (ASSETS / "NOTICE").is_file() and (ASSETS / "swagger-ui-bundle.js.LICENSE.txt").is_file()


def test_the_examples_name_a_demo_shopper(tmp_path):
    from ml.data.sources import read_source

    with TestClient(_app(tmp_path)) as client:
        spec = client.get("/openapi.json").json()
    text = str(spec)
    search = spec["components"]["schemas"]["SearchRequest"]
    assert search["examples"][0] == {"query": DEMO_QUERY, "k": 10, "user_id": DEMO_SHOPPER}
    assert search["properties"]["user_id"]["examples"] == [DEMO_SHOPPER]
    params = spec["paths"]["/recommendations/{user_id}"]["get"]["parameters"]
    user = next(p for p in params if p["name"] == "user_id")
    assert DEMO_SHOPPER in str(user) and DEMO_SHOPPER in text
    # the example is a shopper of the demo's data (the default run's world) who searched, and made no privacy
    # request; the example query is one the demo's shoppers searched for
    cfg = RunConfig()
    raw = read_source("synthetic", None, n_users=cfg.n_users, n_items=cfg.n_items, seed=cfg.seed)
    mine = raw.events[raw.events["user_id"] == DEMO_SHOPPER]
    assert (mine["event_type"] == "search").any() and len(mine) >= 5
    assert DEMO_SHOPPER not in set(raw.privacy_requests["user_id"])
    assert DEMO_QUERY in set(raw.events["query"].dropna())
