"""What a job carries: the validated request it was accepted with, per kind.

A job's ``payload`` in the catalogue is one of these models as JSON; ``parse_payload`` reads it
back. ``ObjectEvent`` is the one shape of an object-store event, whatever its source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from engines.requests import GenerationRequest
from functions.options import ClipOptions
from jobs.callbacks import EventFilter
from storage.sidecar import Inputs

EventSource = Literal["webhook", "poller", "batch", "replay", "cli"]
EventKind = Literal["created", "removed"]


class ObjectEvent(BaseModel):
    """"Look at this object": what every trigger source hands the upload handler."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    bucket: str
    key: str
    etag: str | None = None
    version_id: str = ""
    source: EventSource
    event_time: datetime | None = None

    def dedupe_key(self) -> str | None:
        """The identity of the object version this announces (None: not deduplicated)."""
        if self.kind != "created" or not self.etag:
            return None
        return f"{self.bucket}/{self.key}\n{self.etag}\n{self.version_id}"


class GenerationPayload(BaseModel):
    """A generation job: the engine request, the output options and where to report."""

    model_config = ConfigDict(frozen=True)

    request: GenerationRequest
    options: ClipOptions
    callback_url: str | None = None
    webhook_events_filter: list[EventFilter] | None = None
    request_id: str | None = None  # the accepting request's X-Request-Id, for the job's logs
    # Reference audio by key and sha256 (jobs.inputs); the runner reads it back.
    inputs: Inputs | None = None

    @model_validator(mode="after")
    def _no_inline_audio(self) -> GenerationPayload:
        if self.request.melody is not None or self.request.continuation is not None:
            raise ValueError("a job carries reference audio in 'inputs' (a stored key), "
                             "never as samples")
        return self


class EventPayload(BaseModel):
    """An object-store event job (``letter``: the dead letter it replays, if any)."""

    model_config = ConfigDict(frozen=True)

    event: ObjectEvent
    letter_id: str | None = None


class BatchPayload(BaseModel):
    """A batch job: list ``prefix`` and enqueue one event job per object."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    prefix: str
    source: EventSource = "batch"


def dump(payload: BaseModel) -> dict[str, Any]:
    """A payload as the JSON-able dict stored in the job row."""
    return payload.model_dump(mode="json", exclude_none=True)
