"""``/v1/events``: MinIO bucket notifications (the webhook) and the incoming/ poller's status.

The webhook only enqueues: each accepted record becomes an event job (deduplicated by object
version), so acknowledging is one catalogue transaction and the processing survives any
process. MinIO retries until a 2xx; the answer says "don't send again" (200: accepted, or
refused for good) or "send again" (503: the catalogue cannot record jobs now).

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from deployments.api.deps import ServicesDep
from deployments.api.webhook import Rejected, WebhookReceipt, read_notification
from jobs.model import EventPayload, ObjectEvent, dump
from jobs.uploads import reject_reason
from musicfn import metrics
from musicfn.errors import CatalogueError
from storage.keys import new_id

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.head("/s3", response_class=Response,
             responses={200: {"description": "the target is up", "content": {}}})
async def events_probe() -> Response:
    """MinIO's liveness probe of the webhook target."""
    return Response(status_code=200)


@router.post("/s3", response_model=WebhookReceipt,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/MinioNotification"}}}}})
async def s3_events(request: Request, services: ServicesDep) -> WebhookReceipt:
    """MinIO bucket notifications (``Authorization: Bearer <MUSICFN_WEBHOOK_TOKEN>``); 503
    (redeliver) while the catalogue or the object store is down."""
    items = await read_notification(request)
    await services.storage.require()
    rejected = [i for i in items if isinstance(i, Rejected)]
    accepted: list[ObjectEvent] = []
    for item in items:
        if isinstance(item, Rejected):
            continue
        reason = reject_reason(item, services.settings)
        if reason is None:
            accepted.append(item)
        else:
            metrics.record_event("rejected", "webhook")
            rejected.append(Rejected(key=item.key, reason=reason))
    jobs = [services.queue.new_job(new_id(), "event", dump(EventPayload(event=e)),
                                   dedupe_key=e.dedupe_key()) for e in accepted]
    try:
        await services.queue.submit(jobs)
    except Exception as exc:
        raise CatalogueError(f"cannot record events now ({type(exc).__name__}); redeliver",
                             code="catalogue_unavailable") from None
    if jobs:
        services.nudge_runners()
    return WebhookReceipt(accepted=len(accepted), rejected=rejected)


@router.get("/poller", response_model=dict[str, Any])
async def poller_status(services: ServicesDep) -> dict[str, Any]:
    """The incoming/ poller: enabled, polls made, the last poll's outcome."""
    if services.poller is None:
        return {"enabled": False}
    status: dict[str, Any] = await services.poller.status.remote()
    return status
