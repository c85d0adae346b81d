"""The serving API: contract of every endpoint, bad input, opt-out, hot swap of the champion.

The slow part builds a tiny real model WITHOUT training (the pretrained MiniLM, frozen, over 50 synthetic
items), logs and registers it in a temporary MLflow, promotes it, and fills a real Feast online store;
the service then runs in-process under fastapi.testclient. The fast tests need no model.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ml.config import Settings
from ml.evaluation.rerank import RerankConfig, rerank
from ml.keys import API_KEY as API_KEY_SECRET
from ml.keys import MissingApiKeyError, load_api_key
from ml.serving import explain
from ml.serving.auth import API_KEY_ENV, key_matches
from ml.serving.champion import ChampionLoadError, rerank_settings
from ml.serving.feedback import ImpressionLog, impression_path, impression_record
from ml.serving.optouts import OptOutList
from tests.oracles import online_features, read_impressions

API_KEY = "test-api-key-0123456789abcdef"
PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef"
ENV = {API_KEY_ENV: API_KEY, "VETTED_PSEUDONYM_KEY": PSEUDONYM_KEY}
AUTH = {"X-API-Key": API_KEY}
POLL = 0.5


def _settings(home: Path, demo: bool = False) -> Settings:
    return Settings(
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=(home / "mlartifacts").as_uri(),
        demo=demo,
    )


# =========================================================================================== fast: no model
def test_api_key_from_env_demo_file_or_refusal(tmp_path, caplog):
    assert load_api_key(ENV, tmp_path, allow_demo_key=False) == API_KEY
    with pytest.raises(MissingApiKeyError, match="VETTED_API_KEY"):
        load_api_key({}, tmp_path, allow_demo_key=False)
    with pytest.raises(MissingApiKeyError, match="at least 16"):
        load_api_key({API_KEY_ENV: "short"}, tmp_path, allow_demo_key=False)
    assert not API_KEY_SECRET.demo_path(tmp_path).exists()

    with caplog.at_level(logging.INFO, logger="ml.keys"):
        first = load_api_key({}, tmp_path, allow_demo_key=True)
    path = API_KEY_SECRET.demo_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text and first not in caplog.text
    assert load_api_key({}, tmp_path, allow_demo_key=True) == first  # reused, not replaced


def test_key_comparison():
    assert key_matches(API_KEY, API_KEY)
    assert not key_matches(API_KEY[:-1] + "X", API_KEY)
    assert not key_matches("", API_KEY)
    assert not key_matches("ключ", API_KEY)  # non-ASCII is compared, not an exception


def test_explanation_pieces_hand_worked():
    assert explain.query_terms("The red Shoes for running, red!") == ["red", "shoes", "running"]
    assert explain.query_terms("the of") == ["the", "of"]
    assert explain.terms_found(["red", "shoes", "run"], "Red shoes Brand: Acme. Running") == ["red", "shoes"]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    # result 2 is closest to history row 0 (0.8 > 0.6), result 3 to history row 1
    assert explain.best_history_match(vectors, [0, 1], [2, 3]) == [0, 1]
    # a tie goes to the newest history item (the last one, history is oldest first)
    assert explain.best_history_match(vectors, [2, 2, 0], [2]) == [2]
    assert explain.history_explanation(5, 5, "x") == "in your recent items"
    assert "Blue mug" in explain.history_explanation(5, 2, "Blue mug")
    assert explain.search_explanation([], personalized=True).endswith("nudged by your recent items")


def test_tail_brands_from_catalogue_counts_and_rerank_tags():
    items = ["a1", "a2", "a3", "b1", "b2", "c1"]
    brands = ["A", "A", "A", "B", "B", "C"]
    # items per brand 3, 2, 1 of 6: A alone reaches half, so B and C are the tail
    got = rerank_settings({"serving.rerank.min_tail_share": "0.3"}, items, brands, "m v1")
    assert got.tail_brands == {"B", "C"}
    assert [got.is_tail[i] for i in items] == [False, False, False, True, True, True]
    assert got.config == RerankConfig(min_tail_share=0.3, window=10) and got.enabled
    assert not rerank_settings({}, items, brands, "m v1").enabled
    with pytest.raises(ChampionLoadError, match="serving.rerank.min_tail_share"):
        rerank_settings({"serving.rerank.min_tail_share": "lots"}, items, brands, "m v1")
    with pytest.raises(ChampionLoadError, match="outside"):
        rerank_settings({"serving.rerank.min_tail_share": "1.5"}, items, brands, "m v1")


def test_impression_log_format(tmp_path):
    log = ImpressionLog(tmp_path)
    ts = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    log.append(impression_record("abc", ts, "u_0011", "search", ["i1", "i2"], False, "m", "3"))
    log.close()
    import os

    path = impression_path(tmp_path, "2026-05-01", os.getpid())
    assert path == tmp_path / "feedback" / "impressions" / "date=2026-05-01" / f"part-{os.getpid()}.jsonl"
    with path.open("a") as fh:
        fh.write('{"impression_id": "half-writ')  # a process stopped mid-line: readers skip it
    assert read_impressions(tmp_path) == [
        {
            "impression_id": "abc",
            "ts": "2026-05-01T12:00:00.123456Z",
            "user_id": "u_0011",
            "kind": "search",
            "item_ids": ["i1", "i2"],
            "personalized": False,
            "model_name": "m",
            "model_version": "3",
        }
    ]
    with pytest.raises(ValueError, match="kind"):
        impression_record("x", ts, None, "browse", [], False, "m", "1")


def test_opt_out_list_follows_the_lake(tmp_path):
    from ml.data import lake

    lake_dir = tmp_path / "lake"
    optouts = OptOutList(lake_dir, refresh_seconds=0)
    assert "u_a" not in optouts and optouts.loaded
    requests = pd.DataFrame(
        {
            "user_id": ["u_a", "u_b"],
            "request": ["opt_out", "delete"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
        }
    )
    lake.write_partition(lake_dir, "privacy_requests", "2026-01-02", requests)
    assert "u_a" in optouts and "u_b" in optouts and "u_c" not in optouts


def test_service_without_champion_answers_503_and_refuses_without_key(tmp_path):
    from ml.serving.app import create_app

    settings = _settings(tmp_path)
    with pytest.raises(MissingApiKeyError, match="VETTED_API_KEY"):
        create_app(settings, env={"VETTED_PSEUDONYM_KEY": PSEUDONYM_KEY})
    app = create_app(settings, poll_seconds=60, env=ENV)
    with TestClient(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable" and body["model_version"] is None and body["last_checked"]
        assert "vetted-recsys@champion" in client.get("/version", headers=AUTH).json()["detail"]
        got = client.get("/recommendations/alice", headers=AUTH)
        assert got.status_code == 503 and "no champion" in got.json()["detail"]
        assert client.get("/version", headers=AUTH).status_code == 503
        assert client.get("/recommendations/alice").status_code == 401  # auth before anything else


# =========================================================================================== slow: a real model
N_ITEMS = 50
COLORS = ["red", "blue", "green", "black", "white"]
NOUNS = ["shoe", "mug", "lamp", "chair", "kettle", "scarf", "jacket", "bottle", "pillow", "clock"]
# items per brand: Acme 20, Bolt 6, then eight brands of 3: Acme and Bolt are the head (26 of 50 items)
BRANDS = ["Acme"] * 20 + ["Bolt"] * 6 + [f"Tiny{j}" for j in range(8) for _ in range(3)]
HEAD = {"Acme", "Bolt"}
SHOPPERS = {"alice": [0, 1, 2, 3], "bob": [10, 11, 12], "carol": [20, 21, 22]}  # item rows, oldest first
OPTED_OUT = "carol"


def _catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{r:02d}" for r in range(N_ITEMS)],
            "title": [f"{COLORS[r % 5]} {NOUNS[r // 5]} model {r}" for r in range(N_ITEMS)],
            "description": [f"A {NOUNS[r // 5]} for every day" for r in range(N_ITEMS)],
            "brand": BRANDS,
            "category": ["home" if r // 5 in (1, 2, 4, 7, 8, 9) else "fashion" for r in range(N_ITEMS)],
            "price": [10.0 + r for r in range(N_ITEMS)],
        }
    )


def _save_model(folder: Path, items: pd.DataFrame, bias_seed: int) -> Path:
    """A frozen MiniLM over the catalogue, no training; random heads (item biases, recency weights, a
    perturbed projection) so that the fallback order is known and the history tower is not the identity."""
    import torch

    from ml.training.encoder import item_texts, load_encoder
    from ml.training.model import BiEncoder
    from ml.training.recommender import Recommender, RecommenderSettings

    bert, tokenizer = load_encoder()
    model = BiEncoder(bert, n_items=len(items), trainable_layers=0, max_history=5)
    with torch.no_grad():
        model.item_table.copy_(model.encode_texts(tokenizer, item_texts(items), 32))
        rng = np.random.default_rng(bias_seed)
        bias = rng.normal(0, 1, size=len(items)).astype(np.float32)
        model.item_bias.weight.copy_(torch.from_numpy(bias)[:, None])
        model.recency.weight.copy_(torch.from_numpy(rng.normal(0, 1, size=(5, 1)).astype(np.float32)))
        dim = model.dim
        noise = rng.normal(0, 0.05, size=(dim, dim)).astype(np.float32)
        model.history_proj.weight.copy_(torch.eye(dim) + torch.from_numpy(noise))
        model.history_proj.bias.copy_(torch.from_numpy(rng.normal(0, 0.01, size=dim).astype(np.float32)))
    settings = RecommenderSettings(temperature=0.05, max_history=5, max_query_tokens=16, max_item_tokens=32)
    return Recommender(model, tokenizer, items, settings).save(folder)


def _register(settings: Settings, folder: Path, tags: dict[str, str], promote: bool = True) -> str:
    """Log and register `folder` with `tags` and its artifact digests (as registration records them)."""
    import mlflow

    from ml.registry import registration as reg
    from ml.registry.integrity import digest_tags
    from ml.registry.pyfunc import input_example
    from ml.registry.tracking import client, configure

    experiment = configure(settings)
    c = client(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = reg.log_model(folder, input_example([["i00", "i01"]], "red shoe"))
    tags = {**digest_tags(folder), **tags}
    version = reg.register(c, settings.model_name, uri, run.info.run_id, tags, description="test card")
    if promote:
        reg.promote(c, settings.model_name, version.version)
    return str(version.version)


def _fill_feast(settings: Settings, items: pd.DataFrame) -> None:
    from ml.features import store as fs
    from ml.features.build import write_feature_tables
    from ml.privacy.pseudonymize import Pseudonymizer

    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=3)
    rows = []
    for user, item_rows in SHOPPERS.items():
        for j, r in enumerate(item_rows):
            rows.append(
                {
                    "event_id": f"{user}-{j}",
                    "user_id": pseudo.pseudonym(user),
                    "item_id": f"i{r:02d}",
                    "event_type": "click",
                    "query": None,
                    "ts": start + pd.Timedelta(minutes=j),
                }
            )
    now = datetime.now(UTC)
    data_dir = settings.home / "features"
    write_feature_tables(data_dir, items, pd.DataFrame(rows), 5, pd.Timestamp(now))
    store = fs.open_store(fs.repo_config(settings.feast_dir, settings.profile))
    fs.apply_definitions(store, data_dir)
    fs.materialize(store, now)


def _write_opt_out(settings: Settings, user: str) -> None:
    from ml.data import lake
    from ml.privacy.pseudonymize import Pseudonymizer

    frame = pd.DataFrame(
        {
            "user_id": [Pseudonymizer(PSEUDONYM_KEY.encode()).pseudonym(user)],
            "request": ["opt_out"],
            "ts": [pd.Timestamp.now(tz="UTC")],
        }
    )
    lake.write_partition(settings.lake_dir, "privacy_requests", "2026-01-01", frame)


@pytest.fixture(scope="module")
def serving_world(tmp_path_factory):
    """home, settings, catalogue, v1 promoted, Feast filled, one opt-out; and the running service."""
    from ml.serving.app import create_app

    home = tmp_path_factory.mktemp("serving")
    settings = _settings(home)
    items = _catalogue()
    folder = _save_model(home / "model_v1", items, bias_seed=1)
    v1 = _register(
        settings,
        folder,
        {
            "gate.status": "passed",
            "gate.quality_vs_baseline": "0.12 / 0.10 / pass",
            "quality.ndcg_at_10": "0.12",
        },
    )
    _fill_feast(settings, items)
    _write_opt_out(settings, OPTED_OUT)
    app = create_app(settings, poll_seconds=POLL, env=ENV)
    with TestClient(app) as client:
        yield {
            "home": home,
            "settings": settings,
            "items": items,
            "folder": folder,
            "v1": v1,
            "app": app,
            "client": client,
            "openapi": client.get("/openapi.json").json(),
        }


def _matches_openapi(openapi: dict, path: str, method: str, response) -> None:
    """The body validates against the schema the OpenAPI document declares for this status code."""
    import jsonschema

    declared = openapi["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, f"{method} {path} answered {response.status_code}, not declared"
    schema = declared[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": openapi["components"]})


def _service(world):
    return world["app"].state.service


@pytest.mark.slow
def test_openapi_document_lists_every_endpoint_with_its_security(serving_world):
    doc = serving_world["openapi"]
    assert set(doc["paths"]) == {"/recommendations/{user_id}", "/search", "/healthz", "/version"}
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The service's API key (VETTED_API_KEY)",
    }
    for path, method in [("/recommendations/{user_id}", "get"), ("/search", "post"), ("/version", "get")]:
        op = doc["paths"][path][method]
        assert op["security"] == [{"APIKeyHeader": []}]
        takes_input = path != "/version"
        has_body = path == "/search"
        assert set(op["responses"]) == {"200", "401", "403", "503"} | ({"422"} if takes_input else set()) | (
            {"413"} if has_body else set()
        )
    assert "security" not in doc["paths"]["/healthz"]["get"]
    k = next(p for p in doc["paths"]["/recommendations/{user_id}"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["minimum"] == 1 and k["schema"]["maximum"] == 100


@pytest.mark.slow
def test_healthz_and_version(serving_world):
    client, openapi, v1 = serving_world["client"], serving_world["openapi"], serving_world["v1"]
    health = client.get("/healthz")
    assert health.status_code == 200
    _matches_openapi(openapi, "/healthz", "get", health)
    body = health.json()
    assert body["status"] == "ok" and body["model_version"] == v1

    got = client.get("/version", headers=AUTH)
    assert got.status_code == 200
    _matches_openapi(openapi, "/version", "get", got)
    version = got.json()
    assert version["model_name"] == "vetted-recsys" and version["version"] == v1 and version["alias"] == "champion"
    assert version["gate"] == {
        "status": "passed",
        "checks": {"gate.quality_vs_baseline": "0.12 / 0.10 / pass"},
    }
    assert version["rerank"] == {"min_tail_share": 0.0, "window": 10, "head_share": 0.5, "n_tail_brands": 8}
    assert version["fallback_for"] is None
    assert version["query_encoder"] == "onnx-int8"  # the saved model's exported encoder, its default precision
    diagnostics = version["diagnostics"]
    assert diagnostics["last_error"] is None and diagnostics["last_checked"]
    assert diagnostics["feature_store_error"] is None and diagnostics["privacy_requests_error"] is None


@pytest.mark.slow
def test_healthz_counts_the_scoring_batches(serving_world):
    """Every /recommendations request is scored in some batch; /healthz shows how many and in how many batches."""
    client = serving_world["client"]
    before = client.get("/healthz").json()
    for user in ("alice", "nobody-known", "alice"):
        assert client.get(f"/recommendations/{user}", headers=AUTH).status_code == 200
    after = client.get("/healthz").json()
    assert after["scored_requests"] - before["scored_requests"] == 3
    assert 1 <= after["scoring_batches"] - before["scoring_batches"] <= 3


@pytest.mark.slow
def test_the_running_service_keeps_what_it_holds_out_of_full_collections(serving_world):
    """A full collection walks every object the process holds (torch, MLflow, Feast, the model): one took
    420 ms under load. Once warmed up, the service freezes them (`runtime.settle_heap`)."""
    import gc

    assert serving_world["client"].get("/healthz").status_code == 200
    assert gc.get_freeze_count() > 0


@pytest.mark.slow
def test_recommendations_are_personalized_from_feast_history_and_explained(serving_world):
    client, items = serving_world["client"], serving_world["items"]
    got = client.get("/recommendations/alice", params={"k": 7}, headers=AUTH)
    assert got.status_code == 200
    _matches_openapi(serving_world["openapi"], "/recommendations/{user_id}", "get", got)
    body = got.json()
    assert body["personalized"] is True and body["model_version"] == serving_world["v1"]
    assert len(body["results"]) == 7
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)

    # the same ranking as the model's own exact top-k over alice's history (the evaluation's path)
    champion = _service(serving_world).watcher.current()
    from ml.serving.scorer import Scorer

    assert isinstance(champion.scorer, Scorer)  # the model's own parts, with the first pass
    history = [f"i{r:02d}" for r in SHOPPERS["alice"]]
    ids, exact = champion.recommender.recommend([history], 7)
    assert [r["item_id"] for r in body["results"]] == ids[0]
    assert scores == pytest.approx(exact[0].tolist(), rel=1e-4, abs=1e-4)

    titles = dict(zip(items["item_id"], items["title"], strict=True))
    history_titles = {titles[i] for i in history}
    for r in body["results"]:
        assert r["title"] == titles[r["item_id"]] and r["brand"]
        if r["item_id"] in history:
            assert r["explanation"] == "in your recent items"
        else:
            assert any(t in r["explanation"] for t in history_titles), r["explanation"]


@pytest.mark.slow
def test_the_recommendation_shortcut_answers_as_the_fastapi_route_does(serving_world):
    """`ServiceApp` answers plainly valid recommendation requests itself (`ml.serving.fastpath`): the same
    status, headers and body (but the impression id) as FastAPI's route, which answers the rest."""
    from ml.serving.schemas import RecommendationResponse

    app, client = serving_world["app"], serving_world["client"]
    shortcut = app.fast_answer
    taken: list[str] = []

    async def counted(user_id: str, k: int) -> bytes | None:
        taken.append(user_id)
        return await shortcut(user_id, k)

    cases = [("alice", {"k": 7}), ("bob", {}), (OPTED_OUT, {"k": 3}), ("stranger", {"k": 5})]
    try:
        for user, params in cases:
            app.fast_answer = counted
            fast = client.get(f"/recommendations/{user}", params=params, headers=AUTH)
            app.fast_answer = None
            routed = client.get(f"/recommendations/{user}", params=params, headers=AUTH)
            assert fast.status_code == routed.status_code == 200
            assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
            fast_body, routed_body = fast.json(), routed.json()
            # the body is the documented model, field for field (it is built without the model's class)
            assert RecommendationResponse.model_validate_json(fast.content).model_dump(mode="json") == fast_body
            assert fast_body.pop("impression_id") != routed_body.pop("impression_id")
            assert fast_body == routed_body
        assert taken == [user for user, _ in cases]
        app.fast_answer = counted
        refused = client.get("/recommendations/alice", params={"k": 0}, headers=AUTH)
        assert refused.status_code == 422 and "greater than or equal to 1" in refused.text
        assert len(taken) == len(cases)  # FastAPI's route answered it, with FastAPI's 422 body
    finally:
        app.fast_answer = shortcut


@pytest.mark.slow
def test_the_search_shortcut_answers_as_the_fastapi_route_does(serving_world):
    """`ServiceApp` answers plainly valid searches itself (`ml.serving.fastpath.plain_search`): for many queries,
    shoppers and k, the same status, headers and body (but the impression id) as FastAPI's route, and for an
    anonymous shopper the ranking of `ranking.search` in process; a body the route refuses gets its 422."""
    from ml.serving import ranking
    from ml.serving.schemas import SearchResponse

    app, client = serving_world["app"], serving_world["client"]
    champion = _service(serving_world).watcher.current()
    shortcut = app.fast_search
    taken: list[str] = []

    async def counted(request):  # type: ignore[no-untyped-def]
        taken.append(request.query)
        return await shortcut(request)

    rng = np.random.default_rng(5)
    words = ["red", "blue", "kettle", "scarf", "mug", "lamp", "wool", "steel", "gift", "zzyzx", "the", "Caf\u00e9"]
    users = [None, "alice", "bob", OPTED_OUT, "stranger"]
    cases = []
    for i in range(40):
        query = " ".join(words[int(w)] for w in rng.integers(0, len(words), size=int(rng.integers(1, 4))))
        body = {"query": query, "k": int(rng.integers(1, 12))}
        if users[i % len(users)] is not None:
            body["user_id"] = users[i % len(users)]
        cases.append(body)
    try:
        for body in cases:
            app.fast_search = counted
            fast = client.post("/search", json=body, headers=AUTH)
            app.fast_search = None
            routed = client.post("/search", json=body, headers=AUTH)
            assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
            assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
            fast_body, routed_body = fast.json(), routed.json()
            assert SearchResponse.model_validate_json(fast.content).model_dump(mode="json") == fast_body
            assert fast_body.pop("impression_id") != routed_body.pop("impression_id")
            assert fast_body == routed_body
            if "user_id" not in body:
                expected = ranking.search(champion, body["query"], [], body["k"], ranking.RankingOptions())
                ids = champion.recommender.item_ids
                assert [r["item_id"] for r in fast_body["results"]] == [ids[r] for r in expected.rows]
        assert taken == [body["query"] for body in cases]
        app.fast_search = counted
        for bad, message in [({"query": "shoe", "k": 0}, "greater than or equal to 1"), ({"query": "  "}, "blank")]:
            refused = client.post("/search", json=bad, headers=AUTH)
            assert refused.status_code == 422 and message in refused.text
        assert len(taken) == len(cases)  # FastAPI's route answered them, with FastAPI's 422 bodies
    finally:
        app.fast_search = shortcut


@pytest.mark.slow
def test_unknown_and_opted_out_shoppers_get_the_non_personalized_order(serving_world):
    client = serving_world["client"]
    champion = _service(serving_world).watcher.current()
    bias = champion.recommender.item_bias
    expected = [champion.recommender.item_ids[i] for i in np.argsort(-bias, kind="stable")[:5]]
    for user in ("someone-never-seen", OPTED_OUT):
        got = client.get(f"/recommendations/{user}", params={"k": 5}, headers=AUTH)
        assert got.status_code == 200
        body = got.json()
        assert body["personalized"] is False
        assert [r["item_id"] for r in body["results"]] == expected
        assert all(r["explanation"] == explain.NOT_PERSONALIZED for r in body["results"])
    # carol has history in Feast: only her opt-out makes her answer non-personalized
    assert _service(serving_world).history.recent_items(_service(serving_world).pseudonymizer.pseudonym(OPTED_OUT)) == [
        "i20",
        "i21",
        "i22",
    ]


@pytest.mark.slow
def test_search_explains_with_query_terms_and_blends_history_for_known_shoppers(serving_world):
    client, openapi = serving_world["client"], serving_world["openapi"]
    got = client.post("/search", json={"query": "red kettle", "k": 5}, headers=AUTH)
    assert got.status_code == 200
    _matches_openapi(openapi, "/search", "post", got)
    body = got.json()
    assert body["personalized"] is False and body["query"] == "red kettle" and len(body["results"]) == 5
    top = body["results"][0]
    assert "kettle" in top["title"] and "\u201ckettle\u201d" in top["explanation"]
    for r in body["results"]:
        found = [t for t in ("red", "kettle") if t in r["title"].lower().split()]
        if found:
            assert r["explanation"].startswith("matches ")
            assert all(f"\u201c{t}\u201d" in r["explanation"] for t in found)

    personal = client.post("/search", json={"query": "red kettle", "k": 5, "user_id": "alice"}, headers=AUTH).json()
    assert personal["personalized"] is True
    assert all(r["explanation"].endswith("nudged by your recent items") for r in personal["results"])
    for user in ("someone-never-seen", OPTED_OUT):
        other = client.post("/search", json={"query": "red kettle", "k": 5, "user_id": user}, headers=AUTH).json()
        assert other["personalized"] is False
        assert [r["item_id"] for r in other["results"]] == [r["item_id"] for r in body["results"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        ("get", "/recommendations/alice", {"params": {"k": 0}}, 422, "greater than or equal to 1"),
        ("get", "/recommendations/alice", {"params": {"k": 101}}, 422, "less than or equal to 100"),
        ("get", "/recommendations/alice", {"params": {"k": "ten"}}, 422, "valid integer"),
        ("get", "/recommendations/%20%20", {}, 422, "should match pattern"),
        ("get", "/recommendations/" + "x" * 300, {}, 422, "at most 256 characters"),
        ("post", "/search", {"json": {"query": ""}}, 422, "at least 1 character"),
        ("post", "/search", {"json": {"query": "   "}}, 422, "query is blank"),
        ("post", "/search", {"json": {"query": "shoe " * 200}}, 422, "at most 512 characters"),
        ("post", "/search", {"json": {"query": "shoe", "k": 0}}, 422, "greater than or equal to 1"),
        ("post", "/search", {"json": {"query": "shoe", "k": 101}}, 422, "less than or equal to 100"),
        ("post", "/search", {"json": {"query": "shoe", "user_id": ""}}, 422, "at least 1 character"),
        (
            "post",
            "/search",
            {"json": {"query": "shoe", "colour": "red"}},
            422,
            "Extra inputs are not permitted",
        ),
        ("post", "/search", {"json": {"k": 3}}, 422, "Field required"),
        (
            "post",
            "/search",
            {"content": "not json", "headers": {"content-type": "application/json"}},
            422,
            "JSON decode error",
        ),
    ],
)
def test_bad_input_gets_a_4xx_with_a_clear_message(serving_world, method, path, kwargs, status, message):
    kwargs = dict(kwargs)
    headers = {**AUTH, **kwargs.pop("headers", {})}
    got = getattr(serving_world["client"], method)(path, headers=headers, **kwargs)
    assert got.status_code == status
    assert message in got.text
    spec_path = "/search" if path == "/search" else "/recommendations/{user_id}"
    _matches_openapi(serving_world["openapi"], spec_path, method, got)


@pytest.mark.slow
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong-key-0123456789"}])
@pytest.mark.parametrize(
    "method,path,body",
    [
        ("get", "/recommendations/alice", None),
        ("get", "/version", None),
        ("post", "/search", {"query": "shoe"}),
    ],
)
def test_missing_or_wrong_key_is_refused(serving_world, headers, method, path, body):
    client = serving_world["client"]
    got = client.get(path, headers=headers) if method == "get" else client.post(path, json=body, headers=headers)
    wrong = bool(headers.get("X-API-Key"))
    assert got.status_code == (403 if wrong else 401)
    assert ("does not match" if wrong else "missing X-API-Key") in got.json()["detail"]
    spec_path = "/recommendations/{user_id}" if path.startswith("/recommendations") else path
    _matches_openapi(serving_world["openapi"], spec_path, method, got)


@pytest.mark.slow
def test_impressions_are_logged_pseudonymized_and_never_for_opted_out_shoppers(serving_world):
    client, home = serving_world["client"], serving_world["home"]
    service = _service(serving_world)
    got = client.get("/recommendations/bob", params={"k": 3}, headers=AUTH).json()
    client.get(f"/recommendations/{OPTED_OUT}", headers=AUTH)
    client.post("/search", json={"query": "lamp", "k": 2, "user_id": OPTED_OUT}, headers=AUTH)
    client.post("/search", json={"query": "lamp", "k": 2}, headers=AUTH)
    assert service.impressions.flush()  # written off the request path: wait for the writer
    lines = read_impressions(home)
    mine = [line for line in lines if line["impression_id"] == got["impression_id"]]
    assert mine == [
        {
            **mine[0],
            "user_id": service.pseudonymizer.pseudonym("bob"),
            "kind": "recommendations",
            "item_ids": [r["item_id"] for r in got["results"]],
            "personalized": True,
            "model_version": got["model_version"],
            "model_name": "vetted-recsys",
        }
    ]
    assert service.pseudonymizer.pseudonym(OPTED_OUT) not in {line["user_id"] for line in lines}
    assert any(line["user_id"] is None and line["kind"] == "search" for line in lines)
    raw = "".join(p.read_text() for p in (home / "feedback").rglob("*.jsonl"))
    assert '"bob"' not in raw and "alice" not in raw and "lamp" not in raw


@pytest.mark.slow
def test_rerank_share_from_the_version_tag_is_applied_without_a_reload(serving_world):
    from ml.registry.tracking import client as make_client

    settings, client = serving_world["settings"], serving_world["client"]
    service = _service(serving_world)
    mlflow_client = make_client(settings)
    before = service.watcher.current()
    mlflow_client.set_model_version_tag(settings.model_name, before.version, "serving.rerank.min_tail_share", "1.0")
    try:
        _wait(lambda: client.get("/version", headers=AUTH).json()["rerank"]["min_tail_share"] == 1.0)
        after = service.watcher.current()
        assert after.recommender is before.recommender  # tags only: the model was not reloaded
        body = client.get("/recommendations/alice", params={"k": 6}, headers=AUTH).json()
        # what the evaluation's re-ranker makes of the model's own candidates (26 = max(3k, k + 20))
        history = [f"i{r:02d}" for r in SHOPPERS["alice"]]
        ids, scores = after.recommender.recommend([history], 26)
        expected = rerank(ids[0], scores[0].tolist(), after.rerank.is_tail, 6, RerankConfig(1.0))
        got_ids = [r["item_id"] for r in body["results"]]
        assert got_ids == expected
        tail_before = sum(after.rerank.is_tail[i] for i in ids[0][:6])
        assert sum(after.rerank.is_tail[i] for i in got_ids) > tail_before
        assert all(r["brand"] not in HEAD for r in body["results"][: sum(after.rerank.is_tail[i] for i in ids[0])])
    finally:
        mlflow_client.set_model_version_tag(settings.model_name, before.version, "serving.rerank.min_tail_share", "0")
        _wait(lambda: client.get("/version", headers=AUTH).json()["rerank"]["min_tail_share"] == 0.0)


def _wait(condition, timeout: float = 60.0) -> float:
    """Poll `condition` until true; returns the seconds it took (fails the test after `timeout`)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
def test_history_reads_the_same_values_as_feast_get_online_features(serving_world):
    from ml.features import store as fs
    from ml.features.build import decode_history
    from ml.serving.history import RECENT_ITEMS, HistoryReader

    settings = serving_world["settings"]
    store = fs.open_store(fs.repo_config(settings.feast_dir, settings.profile))
    reader = HistoryReader(store)
    pseudo = _service(serving_world).pseudonymizer
    for user in [*SHOPPERS, "someone-never-seen"]:
        p = pseudo.pseudonym(user)
        expected = decode_history(online_features(store, [p], [RECENT_ITEMS])["recent_items"][0])
        assert reader.recent_items(p) == expected
    assert reader.recent_items(pseudo.pseudonym("alice")) == [f"i{r:02d}" for r in SHOPPERS["alice"]]
    assert reader.last_error is None

    broken = HistoryReader(store, feature="no_such_view:recent_items")
    assert broken.recent_items(pseudo.pseudonym("alice")) == []  # degrades to no history, never raises
    assert broken.last_error and broken.errors == 1


@pytest.mark.slow
def test_shutdown_writes_every_queued_impression(serving_world):
    """The log writes in the background; the app's shutdown must not lose what is still queued."""
    from ml.serving.app import create_app

    service = _service(serving_world)
    app = create_app(serving_world["settings"], watcher=service.watcher, env=ENV, history=service.history)
    app.state.service.impressions.flush_seconds = 3600  # the timer never fires: only the shutdown writes
    with TestClient(app) as client:
        ids = [
            client.get("/recommendations/bob", params={"k": 2}, headers=AUTH).json()["impression_id"] for _ in range(5)
        ]
        assert app.state.service.impressions.pending == 5
    assert service.watcher.current() is not None  # a watcher the app did not build is left running
    logged = {line["impression_id"] for line in read_impressions(serving_world["home"])}
    assert set(ids) <= logged


def test_serve_refuses_bad_worker_settings(tmp_path, monkeypatch):
    from ml.serving.app import serve

    monkeypatch.setenv("VETTED_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="at least 1"):
        serve(_settings(tmp_path), workers=0)
    with pytest.raises(ValueError, match="environment"):  # workers would read other settings than these
        serve(_settings(tmp_path), workers=2)


@pytest.mark.slow
def test_champion_swap_under_a_stream_of_requests_drops_none(serving_world):
    settings, client, items = serving_world["settings"], serving_world["client"], serving_world["items"]
    old = client.get("/version", headers=AUTH).json()["version"]
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[], []]

    def stream(n: int) -> None:
        while not stop.is_set():
            if n == 0:
                got = client.get("/recommendations/alice", params={"k": 5}, headers=AUTH)
            else:
                got = client.post("/search", json={"query": "blue scarf", "k": 5, "user_id": "bob"}, headers=AUTH)
            seen[n].append((got.status_code, got.json().get("model_version", "")))

    threads = [threading.Thread(target=stream, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    try:
        folder = _save_model(serving_world["home"] / "model_v2", items, bias_seed=2)
        new = _register(settings, folder, {"gate.status": "passed"})
        _wait(lambda: client.get("/version", headers=AUTH).json()["version"] == new)
        n_before = [len(s) for s in seen]
        _wait(lambda: all(len(s) >= n + 5 for s, n in zip(seen, n_before, strict=True)))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    for answers in seen:
        assert answers and all(status == 200 for status, _ in answers), {s for s, _ in answers}
        versions = [v for _, v in answers]
        assert versions[0] == old and versions[-1] == new
        first_new = versions.index(new)
        # one switch, no flapping back
        assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}
    assert _service(serving_world).watcher.status().last_error is None


@pytest.mark.slow
def test_a_version_that_fails_to_load_keeps_the_old_champion_and_shows_in_healthz(serving_world, tmp_path):
    import shutil

    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client

    settings, client = serving_world["settings"], serving_world["client"]
    serving = client.get("/version", headers=AUTH).json()["version"]
    broken = tmp_path / "broken"
    shutil.copytree(serving_world["folder"], broken)
    (broken / "heads.pt").unlink()
    bad = _register(settings, broken, {"gate.status": "passed"})
    _wait(lambda: client.get("/healthz").json()["status"] == "degraded")
    health = client.get("/healthz").json()
    assert health["model_version"] == serving and "last_error" not in health
    error = client.get("/version", headers=AUTH).json()["diagnostics"]["last_error"]
    assert f"v{bad} failed" in error and f"still serving v{serving}" in error
    assert client.get("/recommendations/alice", headers=AUTH).json()["model_version"] == serving

    reg.promote(make_client(settings), settings.model_name, serving)  # back to the good one: the error clears
    _wait(lambda: client.get("/healthz").json()["status"] == "ok")
    version = client.get("/version", headers=AUTH).json()
    assert version["version"] == serving and version["diagnostics"]["last_error"] is None


# =========================================================================================== artifacts verified
BOOSTED_ROW = 7  # the item whose bias a tampered heads.pt raises to 1000


def _registered_folder(settings: Settings, version: str) -> Path:
    """The local folder of a registered version's recommender artifact (the test stores are on disk)."""
    import tempfile
    from urllib.parse import unquote, urlparse

    from ml.registry.registration import recommender_artifact_uri
    from ml.registry.tracking import client as make_client

    uri = recommender_artifact_uri(make_client(settings), settings.model_name, version, Path(tempfile.mkdtemp()))
    parsed = urlparse(uri)
    assert parsed.scheme == "file", f"the test's artifact store is local, got {uri}"
    return Path(unquote(parsed.path))


def _boost_one_item(heads: Path, row: int = BOOSTED_ROW) -> None:
    """Overwrite heads.pt with one item's bias at 1000: that item would top every list."""
    import torch

    state = torch.load(heads, weights_only=True)
    state["item_bias.weight"][row, 0] = 1000.0
    torch.save(state, heads)


@pytest.mark.slow
def test_a_registered_version_whose_heads_were_changed_is_refused_and_never_served(serving_world):
    """A version's heads.pt overwritten in the artifact store after registration (one item's bias at 1000)
    fails verification: the watcher keeps the current champion and reports the version as failed."""
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client

    settings, client = serving_world["settings"], serving_world["client"]
    serving = client.get("/version", headers=AUTH).json()["version"]
    tampered = _register(settings, serving_world["folder"], {"gate.status": "passed"}, promote=False)
    _boost_one_item(_registered_folder(settings, tampered) / "heads.pt")
    reg.promote(make_client(settings), settings.model_name, tampered)
    try:
        _wait(lambda: tampered in client.get("/version", headers=AUTH).json()["diagnostics"]["failed_versions"])
        version = client.get("/version", headers=AUTH).json()
        assert version["version"] == serving
        failure = version["diagnostics"]["failed_versions"][tampered]
        assert "IntegrityError" in failure and "changed: heads.pt" in failure
        boosted = f"i{BOOSTED_ROW:02d}"
        for user in ("alice", "someone-never-seen"):
            got = client.get(f"/recommendations/{user}", params={"k": 3}, headers=AUTH).json()
            assert got["model_version"] == serving and got["results"][0]["item_id"] != boosted
        assert client.get("/healthz").json()["status"] == "degraded"
    finally:
        reg.promote(make_client(settings), settings.model_name, serving)
        _wait(lambda: client.get("/healthz").json()["status"] == "ok")


@pytest.mark.slow
def test_load_version_refuses_a_version_without_digests(serving_world):
    from ml.registry.integrity import IntegrityError
    from ml.registry.tracking import client as make_client
    from ml.serving.champion import load_version

    settings = serving_world["settings"]
    version = _register(settings, serving_world["folder"], {"gate.status": "passed"}, promote=False)
    c = make_client(settings)
    tags = {
        k: v
        for k, v in c.get_model_version(settings.model_name, version).tags.items()
        if not k.startswith("artifact.sha256")
    }
    with pytest.raises(IntegrityError, match="no artifact digests"):
        load_version(c, settings.model_name, version, tags)


@pytest.mark.slow
def test_a_version_encodes_queries_with_its_exported_encoder_unless_torch_is_asked_for(serving_world):
    import shutil

    from ml.registry.tracking import client as make_client
    from ml.search.onnx_encoder import MIN_COSINE
    from ml.serving.champion import load_version

    settings, v1 = serving_world["settings"], serving_world["v1"]
    c = make_client(settings)
    tags = c.get_model_version(settings.model_name, v1).tags
    onnx = load_version(c, settings.model_name, v1, tags)
    on_torch = load_version(c, settings.model_name, v1, tags, query_encoder="torch")
    try:
        assert (onnx.query_encoder, on_torch.query_encoder) == ("onnx-int8", "torch")
        queries = ["red kettle", "blue ceramic mug", "Red  KETTLE"]
        got, reference = onnx.query_vectors(queries), on_torch.query_vectors(queries)
        cosines = (got * reference).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosines.min() >= MIN_COSINE["int8"]
        np.testing.assert_array_equal(got[0], got[2])  # the same tokens: the same (cached) vector
        assert onnx.recommender.query_encoder.cache.stats().hits >= 1
    finally:
        for champion in (onnx, on_torch):
            shutil.rmtree(champion.folder, ignore_errors=True)


# =========================================================================================== cold start
@pytest.fixture(scope="module")
def cold_world(tmp_path_factory):
    """A registry whose champion does not verify: v1 passed, v2 good but failed by the gate, v3 (champion)
    passed but with its heads changed after registration."""
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client

    home = tmp_path_factory.mktemp("cold")
    settings = _settings(home)
    items = _catalogue()
    folder = _save_model(home / "model", items, bias_seed=3)
    v1 = _register(settings, folder, {"gate.status": "passed"})
    v2 = _register(settings, folder, {"gate.status": "failed"}, promote=False)
    v3 = _register(settings, folder, {"gate.status": "passed"}, promote=False)
    _boost_one_item(_registered_folder(settings, v3) / "heads.pt")
    reg.promote(make_client(settings), settings.model_name, v3)
    _fill_feast(settings, items)
    return {"settings": settings, "v1": v1, "v2": v2, "v3": v3}


@pytest.mark.slow
def test_a_cold_start_with_a_champion_that_fails_verification_serves_the_newest_passed_version(cold_world, caplog):
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client
    from ml.serving.app import create_app

    settings, v1, v3 = cold_world["settings"], cold_world["v1"], cold_world["v3"]
    with caplog.at_level(logging.INFO, logger="ml.serving"):
        app = create_app(settings, poll_seconds=POLL, env=ENV)
        with TestClient(app) as client:
            health = client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded" and health.json()["model_version"] == v1
            version = client.get("/version", headers=AUTH).json()
            assert version["version"] == v1 and version["fallback_for"] == v3 and version["alias"] == "champion"
            assert "IntegrityError" in version["diagnostics"]["failed_versions"][v3]
            for user in ("alice", "someone-never-seen"):
                got = client.get(f"/recommendations/{user}", params={"k": 3}, headers=AUTH)
                assert got.status_code == 200 and got.json()["model_version"] == v1
                assert got.json()["results"][0]["item_id"] != f"i{BOOSTED_ROW:02d}"
            searched = client.post("/search", json={"query": "red mug", "k": 3}, headers=AUTH)
            assert searched.status_code == 200 and searched.json()["model_version"] == v1
            assert f"serving v{v1} instead" in caplog.text

            reg.promote(make_client(settings), settings.model_name, v1)  # the alias now names what is served
            _wait(lambda: client.get("/healthz").json()["status"] == "ok")
            assert client.get("/version", headers=AUTH).json()["fallback_for"] is None
            reg.promote(make_client(settings), settings.model_name, v3)  # back to the cold world's state


@pytest.mark.slow
def test_a_champion_alias_moved_onto_a_gate_failed_version_is_not_served(cold_world):
    """The alias set by hand (MlflowClient, past promotion's check) onto the gate-failed v2: serving refuses it and
    falls back to a vetted version."""
    from ml.registry.tracking import client as make_client
    from ml.serving.app import create_app

    settings, v1, v2, v3 = cold_world["settings"], cold_world["v1"], cold_world["v2"], cold_world["v3"]
    c = make_client(settings)
    c.set_registered_model_alias(settings.model_name, "champion", v2)
    try:
        app = create_app(settings, poll_seconds=60, env=ENV)
        with TestClient(app) as client:
            version = client.get("/version", headers=AUTH).json()
            assert version["version"] == v1 and version["fallback_for"] == v2
            assert "not served" in version["diagnostics"]["failed_versions"][v2]
            got = client.get("/recommendations/alice", params={"k": 3}, headers=AUTH)
            assert got.status_code == 200 and got.json()["model_version"] == v1
    finally:
        c.set_registered_model_alias(settings.model_name, "champion", v3)


@pytest.mark.slow
def test_a_cold_start_with_no_loadable_passed_version_answers_503_not_500(cold_world):
    """The gate-failed v2 loads but is never served; with v1 gone from the candidates nothing is left."""
    from ml.registry.tracking import client as make_client
    from ml.serving.app import create_app

    settings, v1 = cold_world["settings"], cold_world["v1"]
    c = make_client(settings)
    c.set_model_version_tag(settings.model_name, v1, "gate.status", "rejected")
    try:
        app = create_app(settings, poll_seconds=60, env=ENV)
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 503
            assert client.get("/recommendations/alice", headers=AUTH).status_code == 503
    finally:
        c.set_model_version_tag(settings.model_name, v1, "gate.status", "passed")


# =========================================================================================== a real server
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_real_uvicorn_server_under_concurrent_load_and_a_rollback_answers_no_5xx(cold_world, tmp_path):
    """`serve` (uvicorn, access log off) in a subprocess on a free port; 6 threads send a bounded mix of
    good and bad requests while `rollback` moves champion to another passed version: every answer is a
    2xx or a documented 4xx, the served version changes, and no raw shopper id reaches the server's log."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from ml.registry import registration as reg
    from ml.registry.rollback import rollback
    from ml.registry.tracking import client as make_client

    settings, v1 = cold_world["settings"], cold_world["v1"]
    mlflow_client = make_client(settings)
    reg.promote(mlflow_client, settings.model_name, v1)
    v4 = _register(
        settings,
        _save_model(tmp_path / "model_v4", _catalogue(), bias_seed=4),
        {"gate.status": "passed"},
        promote=False,
    )
    port, log_path = _free_port(), tmp_path / "server.log"
    env = {
        **os.environ,
        **ENV,
        "VETTED_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "VETTED_DEMO": "",
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import logging; logging.basicConfig(level=logging.DEBUG); from ml.config import Settings; "
        f"from ml.serving.app import serve; serve(Settings.from_env(), port={port}, poll_seconds={POLL})"
    )
    raw = "rawshopper-4d2c"
    with log_path.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _healthy(base, proc), timeout=180)
        requests = [
            ("GET", "/recommendations/alice", {"params": {"k": 5}}, {200}),
            ("GET", f"/recommendations/{raw}-{{i}}", {}, {200}),
            ("POST", "/search", {"json": {"query": "blue scarf", "k": 5, "user_id": f"{raw}-{{i}}"}}, {200}),
            ("POST", "/search", {"content": '{"query": "x", "k": NaN, "user_id": "' + raw + '-{i}"}'}, {422}),
            ("POST", "/search", {"content": '[{"user_id": "' + raw + '-{i}"}]'}, {422}),
            ("POST", "/search", {"content": '{"query": "\\ud800", "user_id": "' + raw + '-{i}"}'}, {422}),
            ("POST", "/search", {"content": "x" * 100_000}, {413}),
            ("GET", f"/recommendations/{raw}-{{i}}", {"params": {"k": "Infinity"}}, {422}),
            ("GET", "/version", {}, {200}),
            ("GET", "/healthz", {}, {200}),
        ]
        n_per_thread, seen_versions, statuses = 60, [], []

        def worker(t: int) -> None:
            with httpx.Client(base_url=base, timeout=30, headers={**AUTH, "content-type": "application/json"}) as c:
                for i in range(n_per_thread):
                    method, path, kwargs, allowed = requests[(t + i) % len(requests)]
                    kw = {k: (v.replace("{i}", str(i)) if isinstance(v, str) else v) for k, v in kwargs.items()}
                    if "json" in kw and "user_id" in kw["json"]:
                        kw["json"] = {**kw["json"], "user_id": kw["json"]["user_id"].replace("{i}", str(i))}
                    got = c.request(method, path.replace("{i}", str(i)), **kw)
                    statuses.append((got.status_code, allowed, method, path))
                    if got.status_code == 200 and "model_version" in got.json():
                        seen_versions.append(got.json()["model_version"])
                    elif got.status_code == 200 and path == "/version":
                        seen_versions.append(got.json()["version"])

        def rollback_midway() -> None:
            _wait(lambda: len(statuses) >= 100, timeout=120)
            # the operator's rollback (what `vetted rollback --to` runs): gate status and digests checked first
            rollback(settings, to=v4, reason="load test: roll back mid-traffic", actor="test")

        with ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(worker, t) for t in range(6)] + [pool.submit(rollback_midway)]
            for f in futures:
                f.result(timeout=300)
        assert len(statuses) == 6 * n_per_thread
        assert not [s for s in statuses if s[0] >= 500], [s for s in statuses if s[0] >= 500][:5]
        assert all(code in allowed for code, allowed, _, _ in statuses), [s for s in statuses if s[0] not in s[1]][:5]
        # the served version moved from v1 to v4 (the alias is polled every POLL seconds)
        assert seen_versions[0] == v1
        _wait(lambda: httpx.get(f"{base}/version", headers=AUTH).json()["version"] == v4, timeout=60)
        assert httpx.get(f"{base}/recommendations/alice", headers=AUTH).json()["model_version"] == v4
    finally:
        proc.terminate()
        proc.wait(30)
        reg.promote(mlflow_client, settings.model_name, cold_world["v3"])
    server_log = log_path.read_text()
    assert "Application startup complete" in server_log
    assert raw not in server_log and "alice" not in server_log


def _healthy(base: str, proc) -> bool:
    import httpx

    assert proc.poll() is None, "the server exited"
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
