"""Structured logs: JSON lines carrying the request / job id from the ingress to storage.

One line per record::

    {"ts": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "storage.objects",
     "message": "put s3://musicfn/generations/…wav (123 bytes)", "job_id": "01j…",
     "request_id": "9f…", "pid": 4242}

plus ``exc_type`` / ``exc`` (the traceback, newlines escaped: still one line) when there is an
exception, and any ``extra=`` fields of simple types.

Where it is active: ``configure_json_logging_in_worker()`` turns it on in Ray worker processes
only (Serve replicas, the functions' task workers); drivers (the CLI, tests) keep their own
logging. The lines go to the worker's original stderr, which Ray writes to
``<session>/logs/worker-*.err`` (``ray logs``, the dashboard's Logs tab) - not through Serve's
replica logger, which would wrap each line again. Serve's own logs (access log, replica
lifecycle) are JSON too when the application sets ``logging_config: {encoding: JSON}``
(serve_config.yaml); their ``request_id`` is the same id as ours (the ``X-Request-Id``).

``MUSICFN_LOG_FORMAT`` (``json`` | ``text``, default json) and ``MUSICFN_LOG_LEVEL`` (default
INFO) come from the worker's ``Settings``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from musicfn.settings import get_settings

_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("musicfn_job_id",
                                                                     default=None)
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("musicfn_request_id",
                                                                         default=None)

# The loggers of musicfn's own packages; third-party loggers keep their configuration.
PROJECT_LOGGERS = ("musicfn", "deployments", "triggers", "jobs", "engines", "functions",
                   "storage")
_HANDLER_NAME = "musicfn-json"
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}
_configure_lock = threading.Lock()


def current_job_id() -> str | None:
    """The job (or request) id of the work running in this context, if any."""
    return _JOB_ID.get()


def current_request_id() -> str | None:
    """The HTTP request id (``X-Request-Id``) of the work running in this context, if any."""
    return _REQUEST_ID.get()


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log records emitted inside carry ``job_id``."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


def bind_job_id(job_id: str) -> None:
    """From here on, records of the current context carry ``job_id``.

    For code that owns its context (a request handler, an asyncio task): tasks created
    afterwards inherit the id; the caller's context is untouched once the task ends.
    """
    _JOB_ID.set(job_id)


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Log records emitted inside carry ``request_id``."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (no trailing newline)."""
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or _JOB_ID.get()
        if job_id:
            entry["job_id"] = job_id
        request_id = getattr(record, "request_id", None) or _REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry["pid"] = record.process
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_") \
                    and isinstance(value, str | int | float | bool):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_json_logging(level: int | str | None = None,
                           stream: IO[str] | None = None) -> logging.Handler:
    """Send musicfn's loggers to ``stream`` (default: the process's original stderr) as JSON
    lines. Idempotent: a second call replaces the handler instead of adding one.

    The project loggers stop propagating to the root logger, so no record is written twice.
    Returns the installed handler.
    """
    level = level or get_settings().log_level
    target = stream or sys.__stderr__ or sys.stderr
    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    with _configure_lock:
        for name in PROJECT_LOGGERS:
            logger = logging.getLogger(name)
            for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
                logger.removeHandler(old)
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False
    return handler


def in_ray_worker() -> bool:
    """True inside a Ray worker process (a Serve replica, an actor, a task worker)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        worker = ray._private.worker.global_worker
        return bool(worker.connected and worker.mode == ray.WORKER_MODE)
    except Exception:
        return False


def configure_json_logging_in_worker() -> None:
    """``configure_json_logging()`` once per Ray worker process; nothing in a driver or when
    ``MUSICFN_LOG_FORMAT=text``. Safe to call often (module import, ``__init__``)."""
    if not in_ray_worker() or get_settings().log_format != "json":
        return
    if any(h.get_name() == _HANDLER_NAME for h in logging.getLogger(PROJECT_LOGGERS[0]).handlers):
        return
    configure_json_logging()
