"""Structured logs: JSON lines carrying the request / job id from the ingress to storage."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("musicfn_job_id",
                                                                     default=None)


def current_job_id() -> str | None:
    """The job (or request) id of the work running in this context, if any."""
    return _JOB_ID.get()


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log records emitted inside carry ``job_id``."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)
