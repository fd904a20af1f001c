"""Batch jobs: every object under an incoming/ prefix becomes an event job of its own.

A batch job only lists the prefix and enqueues one event job per object (``parent_id`` = the
batch id, deduplicated per batch and object version, so a re-driven listing adds nothing
twice). The items then spread over every runner and share their leases, retries and dead
letters with webhook and poller events. A batch's progress is counted from its items' outcomes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.job_context import JobContext, JobEnd
from jobs.model import BatchPayload, EventPayload, ObjectEvent, dump
from jobs.queue import JobQueue
from musicfn.errors import InvalidRequestError
from musicfn.settings import Settings
from storage.catalogue.events import BatchRecord
from storage.jobs_schema import JobOutcome, JobRecord
from storage.keys import new_id, utc_now
from storage.objects import ObjectStore
from storage.sidecar import ErrorInfo

_COUNTED = {"processed": "processed", "failed": "failed"}  # every other outcome: skipped


def batch_prefix(source: str, settings: Settings) -> str:
    """The incoming/ prefix a batch source names: ``s3://<bucket>/<prefix>`` or ``<prefix>``.

    Only musicfn's bucket and its incoming prefix are accepted (outputs never feed batches).
    """
    text = source.strip()
    if text.startswith("s3://"):
        bucket, _, text = text.removeprefix("s3://").partition("/")
        if bucket != settings.bucket:
            raise InvalidRequestError(f"batch source bucket {bucket!r} is not musicfn's bucket "
                                      f"{settings.bucket!r}", code="invalid_batch_source")
    text = text.lstrip("/")
    incoming = settings.incoming_prefix
    if text in ("", incoming):
        text = f"{incoming}/"
    parts = text.split("/")
    if parts[0] != incoming or ".." in parts or "\\" in text or \
            any(ord(c) < 32 for c in text):
        raise InvalidRequestError(f"batch source {source!r} must be under {incoming}/ "
                                  f"(e.g. s3://{settings.bucket}/{incoming}/takes/)",
                                  code="invalid_batch_source")
    return text


def new_batch(source: str) -> BatchRecord:
    """A running batch with no progress yet."""
    now = utc_now()
    return BatchRecord(id=new_id(), source=source, status="running", created_at=now,
                       updated_at=now)


def batch_progress(batch: BatchRecord, job: JobRecord | None,
                   items: list[JobRecord]) -> BatchRecord:
    """The batch as its items stand: counts by outcome, ``completed`` once listed and every
    item ended, ``failed`` when the listing itself failed."""
    counts = {"processed": 0, "failed": 0, "skipped": 0}
    open_items = 0
    for item in items:
        if item.state != "done":
            open_items += 1
            continue
        outcome = (item.result or {}).get("outcome") if item.outcome == "completed" else \
            "failed"
        counts[_COUNTED.get(str(outcome), "skipped")] += 1
    status = batch.status
    error = batch.error
    if job is not None and job.state == "done":
        if job.outcome != "completed":
            status, error = "failed", job.error.message if job.error else "listing failed"
        elif open_items == 0:
            status = "completed"
    total = len(items) if job is None or job.state != "done" else \
        int((job.result or {}).get("total", len(items)))
    return batch.model_copy(update={"total": total, "status": status, "error": error,
                                    **counts})


class BatchWork:
    """Batch jobs (``jobs.runner.Work``): list, then enqueue the items."""

    def __init__(self, queue: JobQueue, objects: ObjectStore, settings: Settings) -> None:
        self.queue = queue
        self.objects = objects
        self.settings = settings

    async def run(self, job: JobRecord, ctx: JobContext) -> JobEnd:
        """Enqueue one event job per object under the prefix (raises on a listing fault, so
        the runner tries again; items already enqueued are not added twice)."""
        payload = BatchPayload.model_validate(job.payload)
        infos = await asyncio.to_thread(lambda: list(self.objects.list(payload.prefix)))
        items = []
        for info in infos:
            event = ObjectEvent(kind="created", bucket=self.settings.bucket, key=info.key,
                                etag=info.etag, source=payload.source)
            items.append(self.queue.new_job(
                new_id(), "event", dump(EventPayload(event=event)), parent_id=payload.batch_id,
                dedupe_key=f"batch:{payload.batch_id}\n{event.dedupe_key()}"))
        for start in range(0, len(items), 500):
            await self.queue.submit(items[start:start + 500])
        return JobEnd("completed", result={"total": len(items)})

    async def discard(self, job: JobRecord) -> None:
        """Nothing stored by the listing itself."""

    async def exhausted(self, job: JobRecord) -> JobEnd:
        """The listing kept being interrupted: the batch fails."""
        return JobEnd("failed", error=ErrorInfo(
            code="interrupted", stage="list", message="listing the batch was interrupted"))

    async def ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        """No callbacks for batches."""


def batch_job(queue: JobQueue, batch: BatchRecord, prefix: str,
              source: Any = "batch") -> JobRecord:
    """The job that lists ``prefix`` for ``batch``."""
    return queue.new_job(batch.id, "batch", dump(BatchPayload(batch_id=batch.id, prefix=prefix,
                                                              source=source)))
