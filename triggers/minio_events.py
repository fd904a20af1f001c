"""MinIO bucket notifications (the S3 event format) and musicfn's one event shape.

MinIO POSTs ``{"EventName", "Key", "Records": [...]}`` to a webhook target; in each record
``s3.object.key`` is URL-query-encoded (``+`` for a space), while the top-level ``Key`` is the
plain ``bucket/key``. Every source (webhook, poller, batch, replay) becomes an ``ObjectEvent``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import unquote_plus

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from jobs.model import EventKind, ObjectEvent
from musicfn.errors import MalformedPayloadError
from musicfn.validation import integral, validation_message


class _Lenient(BaseModel):
    # MinIO adds fields between releases: accept what we do not read. Strict types: a number
    # is not a boolean or a string (as the webhook's OpenAPI schema says).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)


class S3Bucket(_Lenient):
    name: str = Field(min_length=1, max_length=255)


class S3Object(_Lenient):
    key: str = Field(min_length=1, max_length=4096)
    size: Annotated[int, Field(ge=0), BeforeValidator(integral)] | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")
    sequencer: str | None = None


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Lenient):
    event_name: str = Field(alias="eventName", min_length=1, max_length=200)
    event_time: datetime | None = Field(default=None, alias="eventTime")
    s3: S3Entity


class MinioNotification(_Lenient):
    """The body MinIO (or AWS S3) POSTs for bucket events."""

    event_name: str | None = Field(default=None, alias="EventName")
    key: str | None = Field(default=None, alias="Key")
    records: list[S3Record] = Field(alias="Records", max_length=1000)


def parse_notification(body: bytes) -> MinioNotification:
    """Validate a webhook body; MalformedPayloadError (HTTP 422) says why not."""
    try:
        return MinioNotification.model_validate_json(body)
    except ValidationError as exc:
        code = "malformed_json" if any(e["type"] == "json_invalid" for e in exc.errors()) \
            else "malformed_event"
        raise MalformedPayloadError(f"not a bucket notification: {validation_message(exc)}",
                                  code=code) from None


def event_kind(event_name: str) -> EventKind | None:
    """``created`` / ``removed`` for the S3 event names musicfn acts on, else None."""
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return "created"
    if name.startswith("ObjectRemoved:"):
        return "removed"
    return None


def object_events(note: MinioNotification) -> list[tuple[S3Record, ObjectEvent | None]]:
    """Each record with its ObjectEvent (None for event types musicfn ignores)."""
    out: list[tuple[S3Record, ObjectEvent | None]] = []
    for rec in note.records:
        kind = event_kind(rec.event_name)
        if kind is None:
            out.append((rec, None))
            continue
        obj = rec.s3.object
        out.append((rec, ObjectEvent(
            kind=kind, bucket=rec.s3.bucket.name, key=unquote_plus(obj.key),
            etag=(obj.etag or "").strip('"') or None, version_id=obj.version_id or "",
            source="webhook", event_time=rec.event_time)))
    return out
