"""The catalogue: one DuckDB file and its tables, composed behind one flat surface.

DuckDB allows a single read-write process per file, so exactly one ``Catalogue`` holds the
connection; in the service that is the owner actor (``storage.catalogue.owner``), which other
processes call through ``storage.catalogue.client``. The tables are separate objects sharing
one ``Database``; the methods here only forward to them, so this class is the owner's (and the
typed client's) list of operations, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.catalogue.admission import Admission
from storage.catalogue.database import Database
from storage.catalogue.events import (
    BatchRecord,
    ClaimRequest,
    EventClaim,
    EventLog,
    EventRecord,
    EventStatus,
)
from storage.catalogue.idempotency import IdempotencyKeys
from storage.catalogue.job_reads import JobReads
from storage.catalogue.jobs import FinishRequest, JobTable
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.catalogue.tracks import CatalogueStats, TrackTable
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


class Catalogue:
    """One catalogue file: tracks, events, idempotency keys and the job queue."""

    def __init__(self, path: Path | str, *, checkpoint_mb: int = 256) -> None:
        self.db = Database(path, checkpoint_mb=checkpoint_mb)
        self.tracks = TrackTable(self.db)
        self.events = EventLog(self.db)
        self.idempotency = IdempotencyKeys(self.db)
        self.job_reads = JobReads(self.db)
        self.jobs = JobTable(self.db, self.tracks, self.job_reads)
        self.admission = Admission(self.db, self.jobs, self.tracks, self.job_reads,
                                   self.idempotency)

    @property
    def path(self) -> Path:
        """The DuckDB file."""
        return self.db.path

    def schema_version(self) -> int:
        """The newest migration applied to the file."""
        return self.db.schema_version()

    def checkpoint(self) -> None:
        """``Database.checkpoint``: the WAL into the file, and a fresh connection."""
        self.db.checkpoint()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # -- tracks (TrackTable) ------------------------------------------------------
    def upsert(self, sidecars: Sequence[Sidecar]) -> int:
        """``TrackTable.upsert``."""
        return self.tracks.upsert(sidecars)

    def upsert_table(self, table: pa.Table) -> int:
        """``TrackTable.upsert_table``."""
        return self.tracks.upsert_table(table)

    def transition(self, track_id: str, status: TrackStatus, *,
                   error: ErrorInfo | None = None) -> Sidecar:
        """``TrackTable.transition``."""
        return self.tracks.transition(track_id, status, error=error)

    def complete(self, sidecar: Sidecar) -> None:
        """``TrackTable.complete``."""
        return self.tracks.complete(sidecar)

    def delete(self, track_ids: Iterable[str]) -> int:
        """``TrackTable.delete``."""
        return self.tracks.delete(track_ids)

    def record_prompts(self, prompts: Iterable[str], at: datetime | None = None) -> None:
        """``TrackTable.record_prompts``."""
        return self.tracks.record_prompts(prompts, at)

    def rebuild_prompts(self) -> None:
        """``TrackTable.rebuild_prompts``."""
        return self.tracks.rebuild_prompts()

    def prune_completed(self, keep_ids: set[str]) -> int:
        """``TrackTable.prune_completed``."""
        return self.tracks.prune_completed(keep_ids)

    def get(self, track_id: str) -> Sidecar | None:
        """``TrackTable.get``."""
        return self.tracks.get(track_id)

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """``TrackTable.list_tracks``."""
        return self.tracks.list_tracks(query)

    def tracks_by_source(self, source_key: str) -> list[Sidecar]:
        """``TrackTable.by_source``."""
        return self.tracks.by_source(source_key)

    def count(self, query: TrackQuery | None = None) -> int:
        """``TrackTable.count``."""
        return self.tracks.count(query)

    def rows(self) -> list[tuple[Any, ...]]:
        """``TrackTable.rows``."""
        return self.tracks.rows()

    def ids(self) -> set[str]:
        """``TrackTable.ids``."""
        return self.tracks.ids()

    def stats(self, top: int = 10) -> CatalogueStats:
        """``TrackTable.stats``."""
        return self.tracks.stats(top)

    # -- events (EventLog) --------------------------------------------------------
    def record_event(self, event: EventRecord) -> None:
        """``EventLog.record_event``."""
        return self.events.record_event(event)

    def record_events(self, events: Iterable[EventRecord]) -> int:
        """``EventLog.record_events``."""
        return self.events.record_events(events)

    def complete_uploads(self, tracks: pa.Table | Sequence[Sidecar],
                         events: Sequence[EventRecord]) -> int:
        """``EventLog.complete_uploads``."""
        return self.events.complete_uploads(tracks, events)

    def get_event(self, bucket: str, key: str, etag: str,
                  version_id: str = "") -> EventRecord | None:
        """``EventLog.get_event``."""
        return self.events.get_event(bucket, key, etag, version_id)

    def claim_event(self, bucket: str, key: str, etag: str, version_id: str, track_id: str, *,
                    stale_after_s: float, retry_failed: bool = False) -> EventClaim:
        """``EventLog.claim_event``."""
        return self.events.claim_event(bucket, key, etag, version_id, track_id,
                                       stale_after_s=stale_after_s, retry_failed=retry_failed)

    def claim_events(self, requests: Sequence[ClaimRequest]) -> list[EventClaim]:
        """``EventLog.claim_events``."""
        return self.events.claim_events(requests)

    def known_objects(self, bucket: str, objects: Sequence[tuple[str, str]]) -> set[str]:
        """``EventLog.known_objects``."""
        return self.events.known_objects(bucket, objects)

    def list_events(self, status: EventStatus | None = None,
                    limit: int = 100) -> list[EventRecord]:
        """``EventLog.list_events``."""
        return self.events.list_events(status, limit)

    def get_cursor(self, name: str) -> str | None:
        """``EventLog.get_cursor``."""
        return self.events.get_cursor(name)

    def set_cursor(self, name: str, value: str) -> None:
        """``EventLog.set_cursor``."""
        return self.events.set_cursor(name, value)

    def save_batch(self, batch: BatchRecord) -> None:
        """``EventLog.save_batch``."""
        return self.events.save_batch(batch)

    def get_batch(self, batch_id: str) -> BatchRecord:
        """``EventLog.get_batch``."""
        return self.events.get_batch(batch_id)

    # -- idempotency (IdempotencyKeys) --------------------------------------------
    def claim_idempotency_key(self, key: str, body_sha256: str, track_id: str) -> str:
        """``IdempotencyKeys.claim``."""
        return self.idempotency.claim(key, body_sha256, track_id)

    # -- admission (Admission) ----------------------------------------------------
    def accept_generations(self, requests: Sequence[GenerationAccept]
                           ) -> list[Enqueued | Refused]:
        """``Admission.accept_generations``."""
        return self.admission.accept_generations(requests)

    # -- jobs (JobTable) ----------------------------------------------------------
    def enqueue(self, jobs: Sequence[JobRecord], *,
                max_depth: int | None = None) -> list[Enqueued]:
        """``JobTable.enqueue``."""
        return self.jobs.enqueue(jobs, max_depth=max_depth)

    def lease(self, holder: str, limit: int, lease_s: float,
              kinds: Sequence[str] = ("generation", "event", "batch")) -> Lease:
        """``JobTable.lease``."""
        return self.jobs.lease(holder, limit, lease_s, kinds)

    def heartbeat(self, holder: str, progress: dict[str, float | None],
                  lease_s: float) -> HeartbeatReply:
        """``JobTable.heartbeat``."""
        return self.jobs.heartbeat(holder, progress, lease_s)

    def finish(self, job_id: str, holder: str, outcome: JobOutcome, *,
               result: dict[str, Any] | None = None, error: ErrorInfo | None = None,
               track: Sidecar | None = None) -> JobOutcome | None:
        """``JobTable.finish``."""
        return self.jobs.finish(job_id, holder, outcome, result=result, error=error, track=track)

    def finish_many(self, requests: Sequence[FinishRequest]) -> list[JobOutcome | None]:
        """``JobTable.finish_many``."""
        return self.jobs.finish_many(requests)

    def retry_later(self, job_id: str, holder: str, delay_s: float, error: ErrorInfo) -> bool:
        """``JobTable.retry_later``."""
        return self.jobs.retry_later(job_id, holder, delay_s, error)

    def cancel(self, job_id: str) -> JobRecord:
        """``JobTable.cancel``."""
        return self.jobs.cancel(job_id)

    def record_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """``JobTable.record_delivery``."""
        return self.jobs.record_delivery(job_id, delivery)

    # -- job_reads (JobReads) -----------------------------------------------------
    def view(self, track_id: str) -> JobView | None:
        """``JobReads.view``."""
        return self.job_reads.view(track_id)

    def statuses(self, track_ids: Sequence[str]) -> dict[str, tuple[str, float | None]]:
        """``JobReads.statuses``."""
        return self.job_reads.statuses(track_ids)

    def job(self, job_id: str) -> JobRecord | None:
        """``JobReads.job``."""
        return self.job_reads.job(job_id)

    def jobs_of(self, parent_id: str) -> list[JobRecord]:
        """``JobReads.jobs_of``."""
        return self.job_reads.jobs_of(parent_id)

    def queue_depth(self) -> int:
        """``JobReads.queue_depth``."""
        return self.job_reads.queue_depth()

    def stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """``JobReads.stale_jobs``."""
        return self.job_reads.stale_jobs(older_than_s)
