"""The web page at ``/`` and the API docs at ``/docs`` and ``/redoc``, from local files only.

The page: static files shipped in ``deployments/static`` (plain HTML, CSS and ES modules, no
build step, no CDN), so it works offline against the ingress it is served from. It calls the
same ``/v1`` routes as any client, with the API key the person enters.

The docs: Swagger UI and ReDoc from the ``fastapi-offline`` package (MIT; it vendors Swagger UI
5, Apache-2.0, and ReDoc 2, MIT), served under ``/docs-assets/``. Swagger UI's start-up code,
which FastAPI inlines, is ``static/docs.js`` here, so the docs page's CSP allows no inline
script. ReDoc starts itself from its ``<redoc>`` element.

Every URL in these pages is relative, so they also work under a Serve ``route_prefix``. Every
response here (pages, files, and the static mounts' 404/405 errors) carries the same security
headers: a Content-Security-Policy, ``Referrer-Policy: no-referrer`` and ``nosniff``.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.staticfiles import PathLike
from starlette.types import Scope

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")


def _docs_assets_dir() -> Path | None:
    """``fastapi_offline/static`` (Swagger UI + ReDoc bundles), found without importing it."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).with_name("static")
    return found if (found / "swagger-ui-bundle.js").is_file() else None


DOCS_ASSETS_DIR = _docs_assets_dir()
DOCS_ASSETS_PREFIX = "docs-assets"

_COMMON_CSP = ("object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
# Scripts and styles only from this origin. Audio may come from the bucket's presigned URLs
# (another origin) or from blob: URLs made from /audio?inline=1.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    f"media-src 'self' blob: http: https:; connect-src 'self'; {_COMMON_CSP}"
)
# Swagger UI: its bundle and static/docs.js; it fetches openapi.json and "try it out" calls
# from this origin; its icons are data: URLs in its CSS.
SWAGGER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    f"connect-src 'self'; {_COMMON_CSP}"
)
# ReDoc renders with styled-components (it injects <style> elements) and runs its search
# index in a blob: worker; scripts stay this origin's only.
REDOC_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; {_COMMON_CSP}"
)


def security_headers(csp: str = CONTENT_SECURITY_POLICY) -> dict[str, str]:
    """The headers every response of this module carries (``csp`` per page kind)."""
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


PAGE_HEADERS = security_headers()


class _StaticFiles(StaticFiles):
    """StaticFiles that revalidates (no stale app.js after an upgrade), never sniffs, and sends
    the security headers on every response, errors included."""

    def __init__(self, *, directory: Path, csp: str = CONTENT_SECURITY_POLICY) -> None:
        super().__init__(directory=directory)
        self.headers = security_headers(csp)

    def file_response(self, full_path: PathLike, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:  # rendered by the app's handler, with these headers
            raise HTTPException(exc.status_code, exc.detail,
                                headers={**(exc.headers or {}), **self.headers}) from None


_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - Swagger UI</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="static/docs.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - ReDoc</title>
  <link rel="icon" href="data:,">
</head>
<body>
  <redoc spec-url="{openapi}"></redoc>
  <script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def _mount_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from local assets, when the app has a schema."""
    if app.openapi_url is None:
        return
    if DOCS_ASSETS_DIR is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc are not served")
        return
    # Relative to the page (/docs, /redoc), so a Serve route_prefix is kept.
    fields = {"title": html.escape(app.title), "assets": DOCS_ASSETS_PREFIX,
              "openapi": html.escape(app.openapi_url.lstrip("/"))}
    swagger = _SWAGGER_PAGE.format(**fields)
    redoc = _REDOC_PAGE.format(**fields)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return HTMLResponse(swagger, headers=security_headers(SWAGGER_CSP))

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> Response:
        return HTMLResponse(redoc, headers=security_headers(REDOC_CSP))

    app.mount(f"/{DOCS_ASSETS_PREFIX}", _StaticFiles(directory=DOCS_ASSETS_DIR),
              name=DOCS_ASSETS_PREFIX)


def mount_web(app: FastAPI) -> None:
    """Add the page's routes to ``app`` (the ingress FastAPI app): ``/``, ``/static/…``, and
    the docs (``/docs``, ``/redoc``, ``/docs-assets/…``)."""

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        # Under a route prefix "/prefix" Starlette redirects to "/prefix/", so the page's
        # relative URLs always resolve inside the prefix.
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    _mount_docs(app)
    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")
