"""The typed client of the catalogue owner: every operation of ``Catalogue`` as an awaitable
call on the owner actor, for the service (ingress, runners, poller), the CLI and the tests.

Each call is one Ray actor task: once sent, the owner runs it even if the awaiting coroutine
is cancelled (a client hanging up), so what the owner decides stands. Processes outside the
service (the CLI) run the same calls through ``storage.catalogue.actor.OwnerClient``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from storage.catalogue.events import (
    BatchRecord,
    ClaimRequest,
    EventClaim,
    EventRecord,
    EventStatus,
)
from storage.catalogue.jobs import FinishRequest
from storage.catalogue.owner import RebuildStatus
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.catalogue.tracks import CatalogueStats
from storage.jobs_schema import (
    Enqueued,
    GenerationAccept,
    HeartbeatReply,
    JobOutcome,
    JobRecord,
    JobView,
    Lease,
    Refused,
)
from storage.sidecar import ErrorInfo, Sidecar, TrackStatus


class CatalogueClient:
    """``await client.get(track_id)`` and the rest of ``Catalogue``, on the owner actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle  # ActorHandle of storage.catalogue.owner.CatalogueOwner

    async def ready(self) -> None:
        """Return once the owner has started (its file opened and migrated)."""
        await self.handle.__ray_ready__.remote()

    async def rebuild_status(self) -> RebuildStatus:
        """``CatalogueOwner.rebuild_status``: what the owner rebuilt so far."""
        out: RebuildStatus = await self.handle.rebuild_status.remote()
        return out

    async def check_file(self) -> bool:
        """``CatalogueOwner.check_file``: rebuild now if the file was lost."""
        out: bool = await self.handle.check_file.remote()
        return out

    async def checkpoint(self) -> None:
        """``CatalogueOwner.checkpoint``."""
        await self.handle.checkpoint.remote()

    async def schema_version(self) -> int:
        """``Catalogue.schema_version`` on the owner."""
        out: int = await self.handle.schema_version.remote()
        return out

    async def upsert(self, sidecars: Sequence[Sidecar]) -> int:
        """``Catalogue.upsert`` on the owner."""
        out: int = await self.handle.upsert.remote(sidecars)
        return out

    async def upsert_table(self, table: pa.Table) -> int:
        """``Catalogue.upsert_table`` on the owner."""
        out: int = await self.handle.upsert_table.remote(table)
        return out

    async def transition(self, track_id: str, status: TrackStatus, *,
                         error: ErrorInfo | None = None) -> Sidecar:
        """``Catalogue.transition`` on the owner."""
        out: Sidecar = await self.handle.transition.remote(track_id, status, error=error)
        return out

    async def complete(self, sidecar: Sidecar) -> None:
        """``Catalogue.complete`` on the owner."""
        await self.handle.complete.remote(sidecar)

    async def delete(self, track_ids: Iterable[str]) -> int:
        """``Catalogue.delete`` on the owner."""
        out: int = await self.handle.delete.remote(track_ids)
        return out

    async def record_prompts(self, prompts: Iterable[str], at: datetime | None = None) -> None:
        """``Catalogue.record_prompts`` on the owner."""
        await self.handle.record_prompts.remote(prompts, at)

    async def rebuild_prompts(self) -> None:
        """``Catalogue.rebuild_prompts`` on the owner."""
        await self.handle.rebuild_prompts.remote()

    async def prune_completed(self, keep_ids: set[str]) -> int:
        """``Catalogue.prune_completed`` on the owner."""
        out: int = await self.handle.prune_completed.remote(keep_ids)
        return out

    async def get(self, track_id: str) -> Sidecar | None:
        """``Catalogue.get`` on the owner."""
        out: Sidecar | None = await self.handle.get.remote(track_id)
        return out

    async def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """``Catalogue.list_tracks`` on the owner."""
        out: TrackPage = await self.handle.list_tracks.remote(query)
        return out

    async def tracks_by_source(self, source_key: str) -> list[Sidecar]:
        """``Catalogue.tracks_by_source`` on the owner."""
        out: list[Sidecar] = await self.handle.tracks_by_source.remote(source_key)
        return out

    async def count(self, query: TrackQuery | None = None) -> int:
        """``Catalogue.count`` on the owner."""
        out: int = await self.handle.count.remote(query)
        return out

    async def rows(self) -> list[tuple[Any, ...]]:
        """``Catalogue.rows`` on the owner."""
        out: list[tuple[Any, ...]] = await self.handle.rows.remote()
        return out

    async def ids(self) -> set[str]:
        """``Catalogue.ids`` on the owner."""
        out: set[str] = await self.handle.ids.remote()
        return out

    async def stats(self, top: int = 10) -> CatalogueStats:
        """``Catalogue.stats`` on the owner."""
        out: CatalogueStats = await self.handle.stats.remote(top)
        return out

    async def record_event(self, event: EventRecord) -> None:
        """``Catalogue.record_event`` on the owner."""
        await self.handle.record_event.remote(event)

    async def record_events(self, events: Iterable[EventRecord]) -> int:
        """``Catalogue.record_events`` on the owner."""
        out: int = await self.handle.record_events.remote(events)
        return out

    async def complete_uploads(self, tracks: pa.Table | Sequence[Sidecar],
                               events: Sequence[EventRecord]) -> int:
        """``Catalogue.complete_uploads`` on the owner."""
        out: int = await self.handle.complete_uploads.remote(tracks, events)
        return out

    async def get_event(self, bucket: str, key: str, etag: str,
                        version_id: str = "") -> EventRecord | None:
        """``Catalogue.get_event`` on the owner."""
        out: EventRecord | None = await self.handle.get_event.remote(bucket, key, etag, version_id)
        return out

    async def claim_event(self, bucket: str, key: str, etag: str, version_id: str, track_id: str,
                          *, stale_after_s: float, retry_failed: bool = False) -> EventClaim:
        """``Catalogue.claim_event`` on the owner."""
        out: EventClaim = await self.handle.claim_event.remote(bucket, key, etag, version_id,
                                                               track_id,
                                                               stale_after_s=stale_after_s,
                                                               retry_failed=retry_failed)
        return out

    async def claim_events(self, requests: Sequence[ClaimRequest]) -> list[EventClaim]:
        """``Catalogue.claim_events`` on the owner."""
        out: list[EventClaim] = await self.handle.claim_events.remote(requests)
        return out

    async def known_objects(self, bucket: str, objects: Sequence[tuple[str, str]]) -> set[str]:
        """``Catalogue.known_objects`` on the owner."""
        out: set[str] = await self.handle.known_objects.remote(bucket, objects)
        return out

    async def list_events(self, status: EventStatus | None = None,
                          limit: int = 100) -> list[EventRecord]:
        """``Catalogue.list_events`` on the owner."""
        out: list[EventRecord] = await self.handle.list_events.remote(status, limit)
        return out

    async def get_cursor(self, name: str) -> str | None:
        """``Catalogue.get_cursor`` on the owner."""
        out: str | None = await self.handle.get_cursor.remote(name)
        return out

    async def set_cursor(self, name: str, value: str) -> None:
        """``Catalogue.set_cursor`` on the owner."""
        await self.handle.set_cursor.remote(name, value)

    async def save_batch(self, batch: BatchRecord) -> None:
        """``Catalogue.save_batch`` on the owner."""
        await self.handle.save_batch.remote(batch)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        """``Catalogue.get_batch`` on the owner."""
        out: BatchRecord = await self.handle.get_batch.remote(batch_id)
        return out

    async def claim_idempotency_key(self, key: str, body_sha256: str, track_id: str) -> str:
        """``Catalogue.claim_idempotency_key`` on the owner."""
        out: str = await self.handle.claim_idempotency_key.remote(key, body_sha256, track_id)
        return out

    async def accept_generations(self, requests: Sequence[GenerationAccept]
                                 ) -> list[Enqueued | Refused]:
        """``Catalogue.accept_generations`` on the owner."""
        out: list[Enqueued | Refused] = await self.handle.accept_generations.remote(requests)
        return out

    async def enqueue(self, jobs: Sequence[JobRecord], *,
                      max_depth: int | None = None) -> list[Enqueued]:
        """``Catalogue.enqueue`` on the owner."""
        out: list[Enqueued] = await self.handle.enqueue.remote(jobs, max_depth=max_depth)
        return out

    async def lease(self, holder: str, limit: int, lease_s: float,
                    kinds: Sequence[str] = ("generation", "event", "batch")) -> Lease:
        """``Catalogue.lease`` on the owner."""
        out: Lease = await self.handle.lease.remote(holder, limit, lease_s, kinds)
        return out

    async def heartbeat(self, holder: str, progress: dict[str, float | None],
                        lease_s: float) -> HeartbeatReply:
        """``Catalogue.heartbeat`` on the owner."""
        out: HeartbeatReply = await self.handle.heartbeat.remote(holder, progress, lease_s)
        return out

    async def finish(self, job_id: str, holder: str, outcome: JobOutcome, *,
                     result: dict[str, Any] | None = None, error: ErrorInfo | None = None,
                     track: Sidecar | None = None) -> JobOutcome | None:
        """``Catalogue.finish`` on the owner."""
        out: JobOutcome | None = await self.handle.finish.remote(job_id, holder, outcome,
                                                                 result=result, error=error,
                                                                 track=track)
        return out

    async def finish_many(self, requests: Sequence[FinishRequest]) -> list[JobOutcome | None]:
        """``Catalogue.finish_many`` on the owner."""
        out: list[JobOutcome | None] = await self.handle.finish_many.remote(requests)
        return out

    async def retry_later(self, job_id: str, holder: str, delay_s: float,
                          error: ErrorInfo) -> bool:
        """``Catalogue.retry_later`` on the owner."""
        out: bool = await self.handle.retry_later.remote(job_id, holder, delay_s, error)
        return out

    async def cancel(self, job_id: str) -> JobRecord:
        """``Catalogue.cancel`` on the owner."""
        out: JobRecord = await self.handle.cancel.remote(job_id)
        return out

    async def record_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """``Catalogue.record_delivery`` on the owner."""
        await self.handle.record_delivery.remote(job_id, delivery)

    async def view(self, track_id: str) -> JobView | None:
        """``Catalogue.view`` on the owner."""
        out: JobView | None = await self.handle.view.remote(track_id)
        return out

    async def statuses(self, track_ids: Sequence[str]) -> dict[str, tuple[str, float | None]]:
        """``Catalogue.statuses`` on the owner."""
        out: dict[str, tuple[str, float | None]] = await self.handle.statuses.remote(track_ids)
        return out

    async def job(self, job_id: str) -> JobRecord | None:
        """``Catalogue.job`` on the owner."""
        out: JobRecord | None = await self.handle.job.remote(job_id)
        return out

    async def jobs_of(self, parent_id: str) -> list[JobRecord]:
        """``Catalogue.jobs_of`` on the owner."""
        out: list[JobRecord] = await self.handle.jobs_of.remote(parent_id)
        return out

    async def queue_depth(self) -> int:
        """``Catalogue.queue_depth`` on the owner."""
        out: int = await self.handle.queue_depth.remote()
        return out

    async def stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """``Catalogue.stale_jobs`` on the owner."""
        out: list[JobRecord] = await self.handle.stale_jobs.remote(older_than_s)
        return out

