"""Accepting generations, many per transaction.

A generation is accepted exactly when its job and ``pending`` track row are committed. One
request per transaction made the owner the front door's bottleneck: five statements and a WAL
sync (≈ 26 ms) per POST, one at a time, capped acceptance near 38 per second. Concurrent
requests (``jobs.queue`` coalesces them) are decided here one by one, in order, but written
together: one depth count, one insert per table, one commit.
"""

from __future__ import annotations

from collections.abc import Sequence

from musicfn.errors import ConflictError
from storage.catalogue.database import Database
from storage.catalogue.idempotency import IdempotencyKeys
from storage.catalogue.job_reads import JobReads
from storage.catalogue.jobs import JobTable
from storage.catalogue.schema import naive_utc
from storage.catalogue.tracks import TrackTable
from storage.jobs_schema import Enqueued, GenerationAccept, JobRecord, Refused
from storage.keys import utc_now
from storage.sidecar import Sidecar


class Admission:
    """The one place generations are accepted (see the module docstring)."""

    def __init__(self, db: Database, jobs: JobTable, tracks: TrackTable, reads: JobReads,
                 idempotency: IdempotencyKeys) -> None:
        self.db = db
        self.jobs = jobs
        self.tracks = tracks
        self.reads = reads
        self.idempotency = idempotency

    def accept_generations(self, requests: Sequence[GenerationAccept]
                           ) -> list[Enqueued | Refused]:
        """Decide each request in order and write the accepted ones in one transaction.

        A request whose idempotency key is bound already gets that job (``created`` False);
        one whose key came with another body is refused ``idempotency_key_reused``; one that
        would push the unfinished jobs past its ``max_depth`` is refused ``queue_full``.
        """
        now = naive_utc(utc_now())
        out: list[Enqueued | Refused] = []
        jobs: list[JobRecord] = []
        tracks: list[Sidecar] = []
        with self.db.lock, self.db.transaction():
            depth = self.reads.depth_in_transaction()
            for r in requests:
                if r.idempotency is not None:
                    try:
                        bound = self.idempotency.bound_in_transaction(*r.idempotency)
                    except ConflictError as exc:
                        out.append(Refused(code="idempotency_key_reused", message=exc.message))
                        continue
                    if bound is not None:
                        out.append(Enqueued(job_id=bound, created=False))
                        continue
                if depth >= r.max_depth:
                    out.append(Refused(code="queue_full", message=(
                        f"{depth} jobs queued or running (limit {r.max_depth}); retry later")))
                    continue
                if r.idempotency is not None:
                    self.idempotency.claim_in_transaction(*r.idempotency, r.job.id)
                depth += 1
                jobs.append(r.job)
                tracks.append(r.track)
                out.append(Enqueued(job_id=r.job.id, created=True))
            self.jobs.insert_in_transaction(jobs, now)
            self.tracks.add_pending_in_transaction(tracks, now)
        return out
