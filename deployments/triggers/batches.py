"""Batch runs: the event handler over every object under an incoming/ prefix, in parallel.

The audio work of each object runs as Ray tasks (through the handler), so a batch spreads
over the cluster's CPUs; progress is saved in the catalogue so any ingress replica (or the
CLI) can report it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from deployments.triggers.handler import EventHandler, EventResult
from deployments.triggers.minio_events import ObjectEvent
from musicfn.errors import InvalidRequestError
from musicfn.settings import Settings
from storage.catalogue_events import BatchRecord
from storage.dlq import EventSource
from storage.keys import new_id, utc_now

_SAVE_EVERY_S = 1.0


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


class BatchRunner:
    """Runs batches with one handler; progress goes to the catalogue as it happens."""

    def __init__(self, handler: EventHandler, *, concurrency: int | None = None) -> None:
        self.handler = handler
        self.catalogue = handler.catalogue
        self.concurrency = concurrency or handler.settings.event_concurrency

    async def run(self, batch: BatchRecord, prefix: str, *, source: EventSource = "batch",
                  on_result: Callable[[BatchRecord, EventResult], None] | None = None
                  ) -> BatchRecord:
        """Handle every object under ``prefix``; returns the final record (never raises for
        a bad object: those count as failed)."""
        settings = self.handler.settings
        try:
            infos = await asyncio.to_thread(lambda: list(self.handler.objects.list(prefix)))
        except Exception as exc:
            return await self._save(batch.model_copy(update={
                "status": "failed", "error": f"listing {prefix} failed: {exc}"}))
        state: dict[str, Any] = {"batch": batch.model_copy(update={"total": len(infos)}),
                                 "saved": 0.0}
        await self._save(state["batch"])
        sem = asyncio.Semaphore(self.concurrency)

        async def one(key: str, etag: str) -> None:
            async with sem:
                try:
                    result = await self.handler.handle(ObjectEvent(
                        kind="created", bucket=settings.bucket, key=key, etag=etag,
                        source=source))
                except Exception as exc:  # not even recordable: count it, keep going
                    result = EventResult(outcome="failed", bucket=settings.bucket, key=key,
                                         etag=etag, reason=str(exc))
            field = {"processed": "processed", "failed": "failed"}.get(result.outcome,
                                                                        "skipped")
            current: BatchRecord = state["batch"]
            state["batch"] = current.model_copy(update={
                field: getattr(current, field) + 1, "updated_at": utc_now()})
            if on_result is not None:
                on_result(state["batch"], result)
            if time.monotonic() - state["saved"] >= _SAVE_EVERY_S:
                state["saved"] = time.monotonic()
                await self._save(state["batch"])

        await asyncio.gather(*(one(i.key, i.etag) for i in infos))
        final: BatchRecord = state["batch"]
        return await self._save(final.model_copy(update={"status": "completed",
                                                         "updated_at": utc_now()}))

    async def _save(self, batch: BatchRecord) -> BatchRecord:
        await self.catalogue.save_batch.remote(batch)
        return batch
