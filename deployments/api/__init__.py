"""The HTTP API: one router per resource, composed into one FastAPI app by ``create_app``."""

from __future__ import annotations

from fastapi import FastAPI

from deployments.api import analyses, batches, events, generations, models, service
from deployments.api.deps import get_services
from deployments.api.front_door import FrontDoor
from deployments.api.openapi import install_openapi
from deployments.http_errors import install_error_handlers
from deployments.observability import install_request_metrics
from deployments.web import mount_web
from musicfn import __version__


def create_app() -> FastAPI:
    """The app with every router, error handler, request metrics, the front door and the
    page. Its services come from ``deployments.api.deps.set_services``."""
    # /docs and /redoc are served by deployments.web from local assets (no CDN).
    app = FastAPI(title="musicfn", version=__version__, docs_url=None, redoc_url=None,
                  description="AI music generation: prompt → normalised, analysed, indexed WAV")
    for module in (generations, models, analyses, batches, events, service):
        app.include_router(module.router)
    install_error_handlers(app)
    install_openapi(app)
    install_request_metrics(app)
    mount_web(app)

    app.add_middleware(
        FrontDoor,
        api_key=lambda: get_services().settings.api_key,
        webhook_token=lambda: get_services().settings.webhook_token,
        body_timeout_s=lambda: get_services().settings.request_body_timeout_s)
    return app
