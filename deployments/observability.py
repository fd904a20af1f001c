"""HTTP observability for the ingress: per-route request metrics and request ids in logs.

``install_request_metrics(app)`` adds one pure-ASGI middleware (no ``BaseHTTPMiddleware``: it
would run the endpoint in another task and break streaming) that, for every HTTP request:

- takes the request id from ``X-Request-Id`` when it is sane (``[A-Za-z0-9._:-]{1,128}``),
  else makes one (uuid4 hex), and puts it into the log context (``musicfn.logs``) for the
  request and every task it starts;
- records ``musicfn_requests`` (route template, method, status) and
  ``musicfn_request_seconds`` (``musicfn.metrics``) once the response is sent, 500 when the
  app raised.

Behind Ray Serve, the proxy already answers with ``X-Request-ID`` (the client's, or the one it
generated and passed in the request headers): the middleware adds the header only when it had
to replace the incoming id, so a response carries one id, the one in the logs.
The route is the matched template (``/v1/generations/{track_id}``); requests that match no
route count as ``unmatched`` so scanners cannot grow the number of series.

It also turns on JSON logging when the module that calls it is imported inside a Ray worker
(the ingress replica), see ``musicfn.logs.configure_json_logging_in_worker``.
"""

from __future__ import annotations

import re
import time
import uuid

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicfn.logs import configure_json_logging_in_worker, request_context
from musicfn.metrics import record_request

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"


def request_id_from(headers: list[tuple[bytes, bytes]]) -> tuple[str, bool]:
    """The request id to use, and whether it came from the request (else it is new)."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _SANE_ID.match(text):
                return text, True
            break
    return uuid.uuid4().hex, False


def route_template(scope: Scope) -> str:
    """The path template of the route that handled ``scope`` (after routing), or
    ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Request ids into logs and responses; per-route counts and latency into metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; non-HTTP scopes pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, incoming = request_id_from(scope.get("headers", []))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if not incoming:
                    MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            with request_context(request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            record_request(route_template(scope), scope.get("method", "GET"), status,
                           time.perf_counter() - started)


def install_request_metrics(app: FastAPI) -> None:
    """Count requests by route and status and time them (``musicfn.metrics``)."""
    configure_json_logging_in_worker()
    app.add_middleware(RequestMetricsMiddleware)
