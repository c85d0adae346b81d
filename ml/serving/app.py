"""The HTTP service: search and recommendations from the champion, with explanations.

    GET  /recommendations/{user_id}?k=10   personalized from the shopper's recent items (Feast online store)
    POST /search {"query", "k", "user_id"?}  the query, blended with the shopper's history when known
    GET  /healthz                          ok / degraded / unavailable and the served version; 503 before any model
    GET  /version                          model name, version, alias, gate status and gate.* tags, re-ranking,
                                           a fallback in use, and the loading / feature store errors

Every endpoint but /healthz needs the `X-API-Key` header (401 when missing, 403 when wrong); /healthz shows
no error text (those name files and folders), /version does. Raw user ids are pseudonymized on arrival with
the ingestion key and never logged: uvicorn's access log, which would print request paths, is off, and an
unexpected error is logged as its type and stack frames only (`ml.serving.errors`). Unknown shoppers,
shoppers without usable history, and shoppers with an opt-out or deletion request get non-personalized
answers (`personalized: false`), never an error. Bad input gets a 4xx, never a 5xx: a 422 says which field
and what was expected, without echoing the input; a body over `MAX_BODY_BYTES` is a 413, refused before it
is read (`ml.serving.limits`). No model loaded at all is a 503 (a cold start whose champion does not load
serves the newest gate-passed version that does, see `ml.serving.watcher`). The OpenAPI document is
FastAPI's own, generated from `ml.serving.schemas`.

One recommendation, from the route to the score, in three files: `recommendation_body` here (the shopper's
pseudonym, history and opt-out), `ml.serving.ranking.recommend_many` (what an answer is: the exact top-k, the
fallback, re-ranking, explanations) and `ml.serving.scorer.Scorer.top_many` (the model's own score,
`ml.training.model.BiEncoder`, with a first pass that only skips items that cannot make the top). The batcher
(`ml.serving.batching`) and the loaded champion (`ml.serving.champion`) carry the request between them.

Plainly valid recommendation requests (GET /recommendations/<id>[?k=N] with the right key) and searches
(POST /search with a small JSON body the route accepts) are answered by `fastpath.ServiceApp` past FastAPI's
routing and parameter solving, with the function the route calls; every other request, valid or not, goes
through FastAPI, whose error bodies and OpenAPI stay the reference.

Concurrency: /recommendations, /healthz and /version run on the event loop. A recommendation's Feast read
and answer are built there; its scoring goes to the `RecommendationBatcher`'s thread, which scores every
request waiting at that moment with one matrix product (`ml.serving.batching`), mostly outside the GIL, so
it also uses the second core. A search's Feast read and answer are built on the event loop too; its ranking
goes to the `SearchBatcher` (`ml.serving.search_batching`): one thread encodes each query on its own (ONNX
Runtime or torch, mostly outside the GIL), another gives every encoded search waiting at that moment one dense and
one lexical pass. Every thread that runs torch uses one OpenMP thread (`runtime.one_openmp_thread`). Impressions are written by a background thread (`ImpressionLog`),
flushed at shutdown. Once warmed up, what the process holds is frozen out of the garbage collector's full
collections (`runtime.settle_heap`), which otherwise stall every waiting request.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Annotated, Any

import pydantic_core
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from ml.config import Settings
from ml.keys import load_api_key, load_pseudonym_key
from ml.privacy.pseudonymize import Pseudonymizer
from ml.serving import errors, ranking
from ml.serving.auth import API_KEY_HEADER, key_matches
from ml.serving.batching import RecommendationBatcher
from ml.serving.champion import Champion
from ml.serving.docs import add_offline_docs
from ml.serving.fastpath import ServiceApp
from ml.serving.feedback import ImpressionLog
from ml.serving.history import HistoryReader
from ml.serving.optouts import OptOutList
from ml.serving.runtime import one_blas_thread, settle_heap
from ml.serving.schemas import (
    DEFAULT_K,
    DEMO_SHOPPER,
    MAX_BODY_BYTES,
    MAX_K,
    MAX_USER_ID_CHARS,
    ErrorMessage,
    HealthResponse,
    RecommendationResponse,
    SearchRequest,
    SearchResponse,
    VersionResponse,
)
from ml.serving.search_batching import SearchBatcher
from ml.serving.service import Service
from ml.serving.watcher import ChampionWatcher

log = logging.getLogger(__name__)

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": f"The {API_KEY_HEADER} header is missing"},
    403: {"model": ErrorMessage, "description": f"The {API_KEY_HEADER} header is wrong"},
    503: {"model": ErrorMessage, "description": "No champion model is loaded yet"},
}


_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorMessage, "description": f"The request body is over {MAX_BODY_BYTES} bytes"},
}
# every name a 422's location may show (the rest are keys a client made up: `errors.safe_loc`)
_FIELDS = frozenset({*SearchRequest.model_fields, "user_id", "k"})
# log lines name routes by their templates, never by the path requested (it can hold a raw user id)
ROUTES = {
    "/recommendations/": "/recommendations/{user_id}",
    "/search": "/search",
    "/healthz": "/healthz",
    "/version": "/version",
    "/openapi.json": "/openapi.json",
    "/docs": "/docs",
    "/docs/oauth2-redirect": "/docs/oauth2-redirect",
    "/docs-assets/": "/docs-assets/{file}",
}


def _json(body: BaseModel | bytes) -> Response:
    """The model (or a body already serialized) as JSON, serialized once (the route's response_model still
    documents it in OpenAPI; returning a Response skips FastAPI's second validation of an object pydantic
    already validated)."""
    content = body if isinstance(body, bytes) else body.model_dump_json()
    return Response(content=content, media_type="application/json")


def create_app(
    settings: Settings,
    watcher: ChampionWatcher | None = None,
    poll_seconds: float = 10,
    env: Mapping[str, str] | None = None,
    history: HistoryReader | None = None,
    options: ranking.RankingOptions | None = None,
) -> FastAPI:
    """The FastAPI app. Refuses (MissingApiKeyError / MissingKeyError) without an API key or a pseudonym key
    outside the demo. The watcher (built here unless given) starts with the app and is closed with it if
    built here; `env` defaults to the process environment (read here, at the edge, and nowhere deeper)."""
    env = os.environ if env is None else env
    api_key = load_api_key(env, settings.home, allow_demo_key=settings.demo)
    pseudonymizer = Pseudonymizer(load_pseudonym_key(env, settings.home, allow_demo_key=settings.demo))
    owns_watcher = watcher is None
    service = Service(
        settings=settings,
        watcher=watcher if watcher is not None else ChampionWatcher(settings, poll_seconds=poll_seconds),
        history=history if history is not None else HistoryReader.open(settings),
        optouts=OptOutList(settings.lake_dir, refresh_seconds=poll_seconds),
        pseudonymizer=pseudonymizer,
        impressions=ImpressionLog(settings.home),
        options=options or ranking.RankingOptions(),
        batcher=RecommendationBatcher(),
        searcher=SearchBatcher(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        one_blas_thread()
        service.watcher.start()
        service.history.warm_up()
        settle_heap()  # after the warm-up: what the service holds from now on is never walked by the GC
        champion = service.watcher.current()
        log.info("serving %s", f"{champion.model_name} v{champion.version}" if champion else "no champion yet")
        yield
        gc.unfreeze()
        service.batcher.close()
        service.searcher.close()
        if owns_watcher:
            service.watcher.close()
        service.impressions.close()

    app = ServiceApp(
        title="Vetted search and recommendations",
        version=_package_version(),
        description=__doc__.split("\n\n", 1)[0] if __doc__ else "",
        lifespan=lifespan,
        max_body_bytes=MAX_BODY_BYTES,
        routes_for_logs=ROUTES,
        docs_url=None,  # /docs comes from add_offline_docs: Swagger UI's files served here, not from a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.add_exception_handler(RequestValidationError, errors.validation_handler(_FIELDS))
    app.state.service = service
    api_key_header = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description="The service's API key (VETTED_API_KEY)"
    )

    # a default, not Annotated: with postponed annotations FastAPI could not see this local object;
    # async: it never blocks, so it runs on the event loop instead of costing a worker-thread hop
    async def require_key(given: str | None = Security(api_key_header)) -> None:  # noqa: B008
        if not given:
            raise HTTPException(
                status_code=401,
                detail=f"missing {API_KEY_HEADER} header: send the service's API key",
                headers={"WWW-Authenticate": API_KEY_HEADER},
            )
        if not key_matches(given, api_key):
            raise HTTPException(status_code=403, detail=f"the {API_KEY_HEADER} header does not match the API key")

    authorized = [Depends(require_key)]

    async def recommendation_body(champion: Champion, user_id: str, k: int) -> bytes:
        """The JSON body of GET /recommendations/{user_id}?k= (the route's and `ServiceApp`'s shortcut's)."""
        pseudonym = service.pseudonymizer.pseudonym(user_id)
        opted_out = pseudonym in service.optouts
        history = [] if opted_out else service.history.recent_items(pseudonym)
        ranked = await service.batcher.recommend(champion, history, k, service.options)
        impression_id, results = service.answered("recommendations", champion, pseudonym, opted_out, ranked)
        response = {  # RecommendationResponse's fields as plain values, serialized without building the model
            "impression_id": impression_id,
            "model_name": champion.model_name,
            "model_version": champion.version,
            "personalized": ranked.personalized,
            "results": results,
        }
        return pydantic_core.to_json(response)

    async def fast_answer(user_id: str, k: int) -> bytes | None:
        champion = service.watcher.current()
        return None if champion is None else await recommendation_body(champion, user_id, k)

    async def search_body(champion: Champion, request: SearchRequest) -> bytes:
        """The JSON body of POST /search (the route's and `ServiceApp`'s shortcut's)."""
        pseudonym = service.pseudonymizer.pseudonym(request.user_id) if request.user_id else None
        opted_out = pseudonym is not None and pseudonym in service.optouts
        history = service.history.recent_items(pseudonym) if pseudonym and not opted_out else []
        ranked = await service.searcher.search(champion, request.query, history, request.k, service.options)
        impression_id, results = service.answered("search", champion, pseudonym, opted_out, ranked)
        response = {  # SearchResponse's fields as plain values, serialized without building the model
            "impression_id": impression_id,
            "model_name": champion.model_name,
            "model_version": champion.version,
            "personalized": ranked.personalized,
            "results": results,
            "query": request.query,
        }
        return pydantic_core.to_json(response)

    async def fast_search(request: SearchRequest) -> bytes | None:
        champion = service.watcher.current()
        return None if champion is None else await search_body(champion, request)

    app.fast_answer = fast_answer
    app.fast_search = fast_search
    app.api_key = api_key

    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationResponse,
        responses=_AUTH_RESPONSES,
        dependencies=authorized,
        summary="Recommendations for one shopper",
    )
    async def recommendations(
        user_id: Annotated[
            str,
            Path(
                min_length=1,
                max_length=MAX_USER_ID_CHARS,
                pattern=r"\S",
                description="The shopper's id (pseudonymized on arrival)",
                examples=[DEMO_SHOPPER],
            ),
        ],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many results")] = DEFAULT_K,
    ) -> Response:
        return _json(await recommendation_body(service.champion(), user_id, k))

    @app.post(
        "/search",
        response_model=SearchResponse,
        responses={**_AUTH_RESPONSES, **_BODY_RESPONSES},
        dependencies=authorized,
        summary="Search the catalogue",
    )
    async def search(request: SearchRequest) -> Response:
        return _json(await search_body(service.champion(), request))

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        summary="Liveness and the served model",
        responses={503: {"model": HealthResponse, "description": "No model loaded yet"}},
    )
    async def healthz(response: Response) -> HealthResponse:
        health = service.health()
        if health.status == "unavailable":
            response.status_code = 503
        return health

    @app.get(
        "/version",
        response_model=VersionResponse,
        responses=_AUTH_RESPONSES,
        dependencies=authorized,
        summary="The served model version and its gate decision",
    )
    async def version() -> VersionResponse:
        return service.version()

    return app


def _package_version() -> str:
    try:
        return metadata.version("vetted")
    except metadata.PackageNotFoundError:
        return "0"


DEFAULT_WORKERS = 1
POLL_SECONDS_ENV = "VETTED_SERVE_POLL_SECONDS"  # how a worker process learns the poll interval


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (`serve(..., workers=N)`): settings and keys from the
    environment, as `vetted serve` reads them."""
    return create_app(Settings.from_env(), poll_seconds=float(os.environ.get(POLL_SECONDS_ENV, "10")))


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    poll_seconds: float = 10,
    workers: int = DEFAULT_WORKERS,
) -> None:
    """Run the service with uvicorn. Access logs stay off: request paths carry raw user ids. BLAS and FAISS
    run one thread per request (see `runtime.one_blas_thread`, `runtime.one_openmp_thread`).

    One worker (the default) is one process holding the model. With `workers` > 1, uvicorn starts that
    many processes on the same port, each loading and polling the champion on its own (so for up to one
    poll interval after a promotion, two answers may come from different versions) and writing its own
    impression file; they use more cores, at the cost of one model copy each. Worker processes read
    their settings from the environment, so `settings` must be what `Settings.from_env()` gives.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        app = create_app(settings, poll_seconds=poll_seconds)
        log.info("Vetted serving on http://%s:%d (OpenAPI at /docs)", host, port)
        uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level="info")
        return
    if settings != Settings.from_env():
        raise ValueError(
            "with workers > 1 every worker reads its settings from the environment (VETTED_HOME, "
            "MLFLOW_TRACKING_URI, ...), and these settings differ from them; set them in the environment"
        )
    # the keys are checked (and the demo's key files created) once here, before the workers could race
    load_api_key(os.environ, settings.home, allow_demo_key=settings.demo)
    load_pseudonym_key(os.environ, settings.home, allow_demo_key=settings.demo)
    os.environ[POLL_SECONDS_ENV] = str(poll_seconds)
    log.info("Vetted serving on http://%s:%d with %d workers (OpenAPI at /docs)", host, port, workers)
    uvicorn.run(
        "ml.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="info",
    )
