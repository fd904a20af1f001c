"""The MinIO webhook's request side: read the notification, triage it, start the work.

MinIO retries a delivery until it gets a 2xx (with ``queue_dir`` even across musicfn
restarts), so the answer says exactly one thing: "do not send this again" (2xx: accepted, or
rejected for good) or "send it again" (5xx: musicfn cannot record events right now).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request
from pydantic import BaseModel

from deployments.triggers.handler import EventHandler, EventResult, reject_reason
from deployments.triggers.minio_events import ObjectEvent, object_events, parse_notification
from deployments.uploads import read_body
from musicfn import metrics
from musicfn.errors import CatalogueError, LimitExceededError

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
                           LimitExceededError("event notification over 1 MiB"))
    out: list[ObjectEvent | Rejected] = []
    for record, event in object_events(parse_notification(body)):
        if event is None:
            out.append(Rejected(key=record.s3.object.key,
                                reason=f"event {record.event_name} is not handled"))
        else:
            out.append(event)
    return out


class WebhookIntake:
    """Accepts webhook events in an ingress replica and processes them in the background."""

    def __init__(self, handler: EventHandler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[EventResult | None]] = set()
        self.sem = asyncio.Semaphore(handler.settings.event_concurrency)

    async def accept(self, items: list[ObjectEvent | Rejected]) -> WebhookReceipt:
        """Reject what can never be processed, then start the rest. Raises CatalogueError
        (503: redeliver) when events cannot be recorded right now."""
        rejected = [i for i in items if isinstance(i, Rejected)]
        accepted: list[ObjectEvent] = []
        for item in items:
            if isinstance(item, Rejected):
                continue
            reason = reject_reason(item, self.handler.settings)
            if reason is None:
                accepted.append(item)
            else:
                log.info("webhook event for %s/%s rejected: %s", item.bucket, item.key, reason)
                metrics.record_event("rejected", "webhook")
                rejected.append(Rejected(key=item.key, reason=reason))
        if accepted:
            try:
                await asyncio.wait_for(self.handler.catalogue.schema_version.remote(), 10)
            except Exception as exc:
                raise CatalogueError(f"catalogue unavailable ({type(exc).__name__}); "
                                     "redeliver later", code="catalogue_unavailable") from None
        for event in accepted:
            task = asyncio.create_task(self._run(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return WebhookReceipt(accepted=len(accepted), rejected=rejected)

    async def _run(self, event: ObjectEvent) -> EventResult | None:
        async with self.sem:
            try:
                return await self.handler.handle(event)
            except Exception:  # already acknowledged: the poller's reconciliation picks it up
                log.exception("event for %s could not be recorded", event.key)
                return None

    async def drain(self, timeout_s: float) -> None:
        """Wait for events in progress (replica shutdown)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

