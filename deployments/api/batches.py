"""``/v1/batches``: process every object under an incoming/ prefix, as one job per object.

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deployments.api.deps import ServicesDep
from deployments.api_models import BatchBody, batch_source_pattern
from jobs.batches import batch_job, batch_prefix, batch_progress, new_batch
from musicfn.errors import InvalidRequestError, MusicfnError, NotFoundError
from storage.catalogue.events import BatchRecord
from storage.jobs_schema import JobRecord
from storage.keys import validate_id

router = APIRouter(prefix="/v1/batches", tags=["batches"])


@router.post("", status_code=202, response_model=BatchRecord)
async def create_batch(body: BatchBody, services: ServicesDep) -> JSONResponse:
    """Accept a batch over ``s3://<bucket>/incoming/<prefix>``: a job lists it and enqueues
    one event job per object (202 + Location; 503 + Retry-After while the object store is
    down)."""
    settings = services.settings
    if not re.fullmatch(batch_source_pattern(settings.bucket, settings.incoming_prefix),
                        body.source):
        raise InvalidRequestError(
            f"source: {body.source[:200]!r} is not under {settings.incoming_prefix}/ of this "
            f"bucket (e.g. s3://{settings.bucket}/{settings.incoming_prefix}/takes/)",
            code="invalid_batch_source")
    prefix = batch_prefix(body.source, settings)
    await services.storage.require()
    batch = new_batch(body.source)
    await services.catalogue.save_batch(batch)
    await services.queue.submit([batch_job(services.queue, batch, prefix)])
    services.nudge_runners()
    return JSONResponse(batch.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/batches/{batch.id}"})


@router.get("/{batch_id}", response_model=dict[str, Any])
async def get_batch(batch_id: str, services: ServicesDep) -> dict[str, Any]:
    """A batch's progress: total, processed, skipped, failed, status."""
    try:
        validate_id(batch_id)
    except MusicfnError:
        raise NotFoundError(f"no batch {batch_id!r}") from None
    batch: BatchRecord = await services.catalogue.get_batch(batch_id)
    job: JobRecord | None = await services.catalogue.job(batch_id)
    items: list[JobRecord] = await services.catalogue.jobs_of(batch_id)
    return batch_progress(batch, job, items).model_dump(mode="json")
