"""/docs served from this package: Swagger UI's script, stylesheet and icon come with the service.

FastAPI's default /docs page loads Swagger UI from a CDN, so it is a blank page where the service has no
internet access (the demo offline, most production networks). This is FastAPI's documented recipe for
self-hosting the docs' JavaScript and CSS, with the files of the npm package swagger-ui-dist (Apache-2.0;
its LICENSE, NOTICE and the bundle's third-party notices sit beside them in static/swagger-ui/, and its
package.json names the version).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def add_offline_docs(app: FastAPI) -> None:
    """Serve /docs (Swagger UI) with its assets under ASSETS_URL. The app must be built with docs_url=None
    (and redoc_url=None: ReDoc's script would come from a CDN too)."""
    missing = [name for name in ASSET_FILES if not (ASSETS / name).is_file()]
    if missing:
        raise FileNotFoundError(f"Swagger UI assets {missing} are missing from {ASSETS}: the package is incomplete")
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None: /docs is served by add_offline_docs")
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
