"""What a job carries: the validated request it was accepted with, per kind.

A job's ``payload`` in the catalogue is one of these models as JSON; ``parse_payload`` reads it
back. ``ObjectEvent`` is the one shape of an object-store event, whatever its source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engines.requests import GenerationRequest
from functions.pipeline import ClipOptions
from jobs.callbacks import EventFilter

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
