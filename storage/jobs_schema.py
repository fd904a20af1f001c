"""Job records as the catalogue stores them: the models and the row mapping of ``jobs``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from storage.keys import utc_now
from storage.sidecar import ErrorInfo, Sidecar

JobKind = Literal["generation", "event", "batch"]
JobState = Literal["queued", "running", "done"]
JobOutcome = Literal["completed", "failed", "canceled"]
COLUMNS = ("id, kind, parent_id, dedupe_key, payload, state, outcome, attempts, max_attempts, "
            "lease_holder, lease_expires_at, not_before, cancel_requested, progress, result, "
            "error, created_at, started_at, updated_at")


class JobRecord(BaseModel):
    """One job: what to run (``payload``), where it stands, and who holds it."""

    id: str
    kind: JobKind
    parent_id: str | None = None
    dedupe_key: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    state: JobState = "queued"
    outcome: JobOutcome | None = None
    attempts: int = 0
    max_attempts: int = 3
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None
    not_before: datetime | None = None
    cancel_requested: bool = False
    progress: float | None = None
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    updated_at: datetime | None = None


class Enqueued(BaseModel):
    """What ``enqueue`` did: the job now standing for the request, and whether it is new."""

    job_id: str
    created: bool


class Refused(BaseModel):
    """A generation the owner did not accept: ``queue_full`` (retry later) or
    ``idempotency_key_reused`` (the key came with another body)."""

    code: Literal["queue_full", "idempotency_key_reused"]
    message: str


class GenerationAccept(BaseModel):
    """One generation to accept: its job, its ``pending`` track row, the request's
    idempotency (key, body sha256) and the queue depth it may not push past."""

    job: JobRecord
    track: Sidecar
    idempotency: tuple[str, str] | None = None
    max_depth: int


class Lease(BaseModel):
    """A runner's share of the queue: jobs to run, and jobs out of attempts to dead-letter."""

    run: list[JobRecord] = Field(default_factory=list)
    exhausted: list[JobRecord] = Field(default_factory=list)


class JobView(BaseModel):
    """A track with the live state of its job (progress, attempts, callbacks)."""

    track: Sidecar
    job: JobRecord | None = None


class HeartbeatReply(BaseModel):
    """Which of the runner's jobs it must stop: canceled, or no longer its own."""

    cancel: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)


def aware(ts: Any) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


def job_from_row(row: Sequence[Any]) -> JobRecord:
    (id_, kind, parent, dedupe, payload, state, outcome, attempts, max_attempts, holder,
     expires, not_before, cancel, progress, result, error, created, started, updated) = row
    return JobRecord(
        id=id_, kind=kind, parent_id=parent, dedupe_key=dedupe, payload=json.loads(payload),
        state=state, outcome=outcome, attempts=attempts, max_attempts=max_attempts,
        lease_holder=holder, lease_expires_at=aware(expires), not_before=aware(not_before),
        cancel_requested=cancel, progress=progress,
        result=json.loads(result) if result else None,
        error=ErrorInfo.model_validate_json(error) if error else None,
        created_at=aware(created) or utc_now(), started_at=aware(started),
        updated_at=aware(updated))
