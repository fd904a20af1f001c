"""The MinIO webhook's request body: read, capped and parsed into events or refusals.

MinIO retries a delivery until it gets a 2xx (with ``queue_dir`` even across musicfn
restarts), so the answer says exactly one thing: "do not send this again" (2xx: accepted, or
rejected for good) or "send it again" (5xx: musicfn cannot record events right now).
"""

from __future__ import annotations

import logging

from fastapi import Request
from pydantic import BaseModel

from deployments.api.uploads import read_body
from jobs.model import ObjectEvent
from musicfn.errors import PayloadTooLargeError
from triggers.minio_events import object_events, parse_notification

log = logging.getLogger(__name__)
MAX_NOTIFICATION_BYTES = 1024 * 1024


class Rejected(BaseModel):
    key: str
    reason: str


class WebhookReceipt(BaseModel):
    """The webhook's answer: what will be processed and what never will be."""

    accepted: int
    rejected: list[Rejected]


async def read_notification(request: Request) -> list[ObjectEvent | Rejected]:
    """The events of a webhook body (capped at 1 MiB: 413; malformed: 422)."""
    body = await read_body(request, MAX_NOTIFICATION_BYTES,
                           PayloadTooLargeError("event notification over 1 MiB"))
    out: list[ObjectEvent | Rejected] = []
    for record, event in object_events(parse_notification(body)):
        if event is None:
            out.append(Rejected(key=record.s3.object.key,
                                reason=f"event {record.event_name} is not handled"))
        else:
            out.append(event)
    return out
