"""The front door: who may send a body, and how long they may take to send it.

A pure ASGI middleware in front of every route, so nothing below it runs for a refused caller:

* **Credentials before the body.** ``/v1/events/s3`` needs the webhook bearer token, every
  other ``/v1`` route the API key. A caller without them gets 401 as soon as the headers
  arrive: FastAPI never reads, parses or validates their body (no 422 field detail for
  strangers, no 10 MB parsed for nothing).
* **A deadline on the body.** The whole body must arrive within ``body_timeout_s``; a caller
  trickling it (or stalling) gets 408 and the request's slot is freed.

Both answers use musicfn's one error shape (``{"code", "message"}``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.api.auth import bearer_token, has_api_key, secret_matches
from deployments.http_errors import musicfn_error_response
from musicfn.errors import RequestTimeoutError, UnauthorizedError

WEBHOOK_PATH = "/v1/events/s3"


class FrontDoor:
    """ASGI middleware: credentials checked before any body byte is read; a body deadline."""

    def __init__(self, app: ASGIApp, *, api_key: Callable[[], SecretStr | None],
                 webhook_token: Callable[[], SecretStr | None],
                 body_timeout_s: Callable[[], float]) -> None:
        self.app = app
        self.api_key = api_key
        self.webhook_token = webhook_token
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        refusal = self._refusal(scope, path)
        if refusal is not None:
            await refusal(scope, _no_body, send)
            return
        await _with_deadline(self.app, scope, receive, send, self.body_timeout_s())

    def _refusal(self, scope: Scope, path: str) -> ASGIApp | None:
        if not path.startswith("/v1/"):
            return None  # the page, /healthz, /docs: public
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if path == WEBHOOK_PATH:
            if scope["method"] == "HEAD":
                return None  # MinIO's probe of the target
            token = self.webhook_token()
            if token is None or not secret_matches(bearer_token(headers), token):
                return musicfn_error_response(UnauthorizedError(
                    "missing or invalid bearer token"))
            return None
        if not has_api_key(headers, self.api_key()):
            return musicfn_error_response(UnauthorizedError(
                "missing or invalid API key (send X-API-Key or Authorization: Bearer)"))
        return None


async def _with_deadline(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                         timeout_s: float) -> None:
    """Run ``app`` with a deadline on the request body: past it, answer 408 here and tell the
    app the client left (so it stops; whatever it sends afterwards is dropped)."""
    deadline = time.monotonic() + timeout_s
    state = {"body_done": False, "timed_out": False, "started": False}

    async def timed_receive() -> Message:
        if state["body_done"] or state["timed_out"]:
            return await receive() if not state["timed_out"] else {"type": "http.disconnect"}
        try:
            message = await asyncio.wait_for(receive(),
                                             timeout=max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            state["timed_out"] = True
            if not state["started"]:
                error = RequestTimeoutError(f"request body not received within {timeout_s:g} s",
                                            code="body_timeout")
                await musicfn_error_response(error)(scope, _no_body, send)
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body", False):
            state["body_done"] = True
        return message

    async def guarded_send(message: Message) -> None:
        if state["timed_out"]:
            return
        state["started"] = True
        await send(message)

    await app(scope, timed_receive, guarded_send)


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve's route_prefix sets root_path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
