"""The web page at ``/``: static files shipped in ``deployments/static`` (no build step).

Plain HTML, CSS and ES modules, no CDN: the page works offline against the ingress it is
served from. Every URL in it is relative, so it also works under a Serve ``route_prefix``.
The page calls the same ``/v1`` routes as any client, with the API key the person enters.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.staticfiles import PathLike
from starlette.types import Scope

STATIC_DIR = Path(__file__).with_name("static")

# Scripts and styles only from this origin. Audio may come from the bucket's presigned URLs
# (another origin) or from blob: URLs made from /audio?inline=1.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: http: https:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _StaticFiles(StaticFiles):
    """StaticFiles that revalidates (no stale app.js after an upgrade) and never sniffs."""

    def file_response(self, full_path: PathLike, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_web(app: FastAPI) -> None:
    """Add the page's routes to ``app`` (the ingress FastAPI app): ``/`` and ``/static/…``."""

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        # Under a route prefix "/prefix" Starlette redirects to "/prefix/", so the page's
        # relative URLs always resolve inside the prefix.
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")
