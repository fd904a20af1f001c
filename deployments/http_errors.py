"""The one place musicfn errors become HTTP responses: ``{"code", "message"}`` JSON bodies.

Every error class maps to a status here and nowhere else. Unexpected exceptions become a 500
with a generic message (details go to the log, never to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    LimitExceededError,
    MalformedPayloadError,
    MusicfnError,
    NoGpuError,
    NotFoundError,
    RequestTimeoutError,
    StorageError,
    StorageUnreachableError,
    TransientStorageError,
    UnauthorizedError,
    UnsupportedError,
    original_error,
)

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS_BY_ERROR: tuple[tuple[type[MusicfnError], int], ...] = (
    (LimitExceededError, 413),
    (RequestTimeoutError, 408),
    (UnsupportedError, 422),
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
    original = original_error(exc)
    if isinstance(original, MusicfnError):
        exc = original
    status = status_for(exc)
    if status >= 500:
        log.warning("request failed: %s (%s)", exc.message, exc.code)
    retry = RETRY_AFTER_S.get(status) if exc.retryable or status == 503 else None
    return error_response(status, exc.code, exc.message,
                          headers={"Retry-After": retry} if retry else None)


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
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        kind = str(first.get("type", ""))
        code = "malformed_json" if kind == "json_invalid" else "invalid_request"
        return error_response(422, code, f"{where}: {msg}" if where else msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 413: "limit_exceeded", 415: "unsupported_media_type"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                              str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; see the service log")
