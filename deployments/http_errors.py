"""The one place musicfn errors become HTTP responses: ``{"code", "message"}`` JSON bodies.

Every error class maps to a status here and nowhere else (``STATUS_BY_ERROR``), and so does
every error FastAPI or Starlette raises before a route runs (validation, unknown route or
method). The rule, also in the README's HTTP API section:

* **400** a value the API does not accept: out of range, over a live limit, not one of the
  choices, a combination that cannot work, a bad query or header value. The message names the
  field (``duration_s: ...``).
* **422** a JSON body that is not the document the route takes: unparseable, a field of the
  wrong JSON type (``"duration_s": true``), an unknown or a missing field.
* **401** credentials; **404** no such resource; **408** the body came too slowly; **409** the
  resource's state does not allow it; **413** a body over its byte cap (nothing else).
* **503** + ``Retry-After`` a dependency is down or the queue is full; **500** a bug (details
  only in the log).

``ERROR_DESCRIPTIONS`` (every status this module answers) is what ``deployments.api.openapi``
declares in the OpenAPI document.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from musicfn.errors import (
    AccessDeniedError,
    CatalogueError,
    CatalogueLockedError,
    ConfigurationError,
    ConflictError,
    EngineError,
    EngineOverloadedError,
    InputError,
    InvalidRequestError,
    MalformedPayloadError,
    MusicfnError,
    NoGpuError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    StorageError,
    StorageUnreachableError,
    TransientStorageError,
    UnauthorizedError,
    original_error,
)

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS_BY_ERROR: tuple[tuple[type[MusicfnError], int], ...] = (
    (PayloadTooLargeError, 413),
    (RequestTimeoutError, 408),
    (MalformedPayloadError, 422),
    (InputError, 400),
    (UnauthorizedError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (EngineOverloadedError, 503),
    (NoGpuError, 503),
    (EngineError, 500),
    (StorageUnreachableError, 503),
    (TransientStorageError, 503),
    (AccessDeniedError, 502),
    (StorageError, 502),
    (CatalogueLockedError, 503),
    (CatalogueError, 503),
    (ConfigurationError, 500),
)
RETRY_AFTER_S = {503: "5"}
# Every status an error answer can have (the table's, plus 405 from routing).
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "A value the API does not accept; the message names the field.",
    401: "Missing or invalid credentials.",
    404: "No such resource (or route).",
    405: "The route exists but not with this method; `Allow` lists the methods it has.",
    408: "The request body did not arrive in time.",
    409: "The resource's state does not allow the operation.",
    413: "The request body is over its byte cap.",
    422: "The body is not the JSON document the route takes (unparseable, a field of the "
         "wrong type, an unknown or missing field).",
    500: "A bug; the details are in the service log.",
    502: "The object store refused the operation.",
    503: "A dependency is down or the queue is full; retry after `Retry-After` seconds.",
}
if not {s for _, s in STATUS_BY_ERROR} <= set(ERROR_DESCRIPTIONS):
    raise RuntimeError("every status of STATUS_BY_ERROR needs an ERROR_DESCRIPTIONS entry")
# pydantic error types that mean "not the document's shape" (422) rather than "a bad value".
_SHAPE_ERRORS = frozenset({"missing", "extra_forbidden", "json_invalid", "int_from_float",
                           "union_tag_invalid", "union_tag_not_found", "is_instance_of"})
_CHOICE_ERRORS = frozenset({"literal_error", "enum"})
_LOCATIONS = frozenset({"body", "query", "header", "path", "cookie"})


def status_for(exc: MusicfnError) -> int:
    """The HTTP status of a musicfn error."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error body in musicfn's one shape."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def musicfn_error_response(exc: MusicfnError) -> JSONResponse:
    """The response for a musicfn error (also one wrapped by Ray): its status from the table,
    ``Retry-After`` on a 503."""
    original = original_error(exc)
    if isinstance(original, MusicfnError):
        exc = original
    status = status_for(exc)
    if status >= 500:
        log.warning("request failed: %s (%s)", exc.message, exc.code)
    retry = RETRY_AFTER_S.get(status) if exc.retryable or status == 503 else None
    return error_response(status, exc.code, exc.message,
                          headers={"Retry-After": retry} if retry else None)


def validation_error(errors: list[Any]) -> MusicfnError:
    """FastAPI's validation errors as one musicfn error: MalformedPayloadError (422) when the
    body is not the document's shape, else InvalidRequestError (400) naming the field."""
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    where = loc[0] if loc and loc[0] in _LOCATIONS else "body"
    field = ".".join(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    kind = str(first.get("type", ""))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", msg)
        return MalformedPayloadError(f"the body is not valid JSON: {detail}",
                                     code="malformed_json")
    if where == "body" and _is_shape_error(kind, first):
        text = f"{field}: {msg}" if field else f"the request needs a JSON body: {msg}"
        return MalformedPayloadError(text, code="malformed_body")
    name = (loc[1] if len(loc) > 1 else where).lower().replace("-", "_")
    return InvalidRequestError(f"{field}: {msg}" if field else msg, code=f"invalid_{name}")


def _is_shape_error(kind: str, error: dict[str, Any]) -> bool:
    if kind in _SHAPE_ERRORS or kind.endswith(("_type", "_parsing")):
        return True
    if kind not in _CHOICE_ERRORS:
        return False
    # A choice error is a type error when the input's JSON type is not the choices' type.
    value = error.get("input")
    strings = "'" in str((error.get("ctx") or {}).get("expected", ""))
    if value is None or isinstance(value, bool | dict | list):
        return True
    return (not strings) if isinstance(value, str) else strings


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route at the request's path (Starlette's 405 names only the
    first route's)."""
    path: str = request.scope.get("path", "")
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and route.methods and regex.match(path):
            methods |= set(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the ``{code, message}`` shape."""

    @app.exception_handler(MusicfnError)
    async def _musicfn(_: Request, exc: MusicfnError) -> JSONResponse:
        return musicfn_error_response(exc)

    from ray.serve.exceptions import BackPressureError

    @app.exception_handler(BackPressureError)
    async def _backpressure(_: Request, exc: BackPressureError) -> JSONResponse:
        # A deployment's queue is at max_queued_requests: the same 503 as our own limits.
        return musicfn_error_response(EngineOverloadedError(
            f"the engine is full ({exc.message}); retry later", code="queue_full"))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return musicfn_error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allow = allowed_methods(request)
            if request.method == "OPTIONS":  # the methods of this resource: not an error
                return Response(status_code=204,
                                headers={"Allow": ", ".join([*allow, "OPTIONS"])})
            headers["Allow"] = ", ".join(allow)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 413: "payload_too_large", 415: "unsupported_media_type"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                              str(exc.detail), headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; see the service log")
