"""A typed client of the job queue held by the catalogue owner actor.

Every method is one call on the owner (``storage.catalogue.store.Catalogue``), awaited. The
calls are Ray actor tasks: once sent, the owner runs them even if the awaiting coroutine is
cancelled (a client hanging up), so "accepted" is decided by the owner, never half-way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.model import GenerationPayload, dump
from musicfn.errors import ConflictError, EngineOverloadedError
from storage.catalogue.client import CatalogueClient
from storage.catalogue.jobs import FinishRequest
from storage.jobs_schema import (
    Enqueued,
    GenerationAccept,
    HeartbeatReply,
    JobOutcome,
    JobRecord,
    Lease,
    Refused,
)
from storage.owner_batch import Coalescer
from storage.sidecar import ErrorInfo, Sidecar


class JobQueue:
    """``await queue.enqueue(...)`` and friends, over the catalogue owner's typed client."""

    def __init__(self, catalogue: CatalogueClient, *, max_attempts: int) -> None:
        self.catalogue = catalogue
        self.max_attempts = max_attempts
        # Concurrent finishes and event submissions of this process share transactions.
        self._finishes: Coalescer[FinishRequest, JobOutcome | None] = Coalescer(
            self._finish_many)
        self._submits: Coalescer[list[JobRecord], list[Enqueued]] = Coalescer(
            self._submit_many)
        self._accepts: Coalescer[GenerationAccept, Enqueued | Refused] = Coalescer(
            self.catalogue.accept_generations)

    async def submit_generation(self, track: Sidecar, payload: GenerationPayload, *,
                                max_depth: int,
                                idempotency: tuple[str, str] | None = None) -> Enqueued:
        """Accept a generation: its job and ``pending`` track row, committed together (with
        the generations other requests of this process submit meanwhile). Raises
        EngineOverloadedError ``queue_full`` or ConflictError ``idempotency_key_reused``."""
        job = JobRecord(id=track.id, kind="generation", payload=dump(payload),
                        max_attempts=self.max_attempts, created_at=track.created_at)
        # shield: a cancelled request must not stop us from learning the outcome in time to
        # log it; once sent, the owner decides either way.
        done = await asyncio.shield(self._accepts.one(GenerationAccept(
            job=job, track=track, idempotency=idempotency, max_depth=max_depth)))
        if isinstance(done, Refused):
            if done.code == "queue_full":
                raise EngineOverloadedError(done.message, code=done.code)
            raise ConflictError(done.message, code=done.code)
        return done

    async def submit(self, jobs: list[JobRecord], *,
                     max_depth: int | None = None) -> list[Enqueued]:
        """Accept jobs (events, batches) all or none; deduplicated by ``dedupe_key``."""
        if not jobs:
            return []
        if max_depth is None:  # share a transaction with concurrent submissions
            return await asyncio.shield(self._submits.one(list(jobs)))
        done: list[Enqueued] = await asyncio.shield(
            self.catalogue.enqueue(jobs, max_depth=max_depth))
        return done

    async def _submit_many(self, batches: list[list[JobRecord]]) -> list[list[Enqueued]]:
        done: list[Enqueued] = await self.catalogue.enqueue(
            [j for b in batches for j in b])
        out, start = [], 0
        for b in batches:
            out.append(done[start : start + len(b)])
            start += len(b)
        return out

    def new_job(self, job_id: str, kind: Any, payload: dict[str, Any], *,
                parent_id: str | None = None, dedupe_key: str | None = None) -> JobRecord:
        """A job record with this queue's attempt budget."""
        return JobRecord(id=job_id, kind=kind, payload=payload, parent_id=parent_id,
                         dedupe_key=dedupe_key, max_attempts=self.max_attempts)

    async def lease(self, holder: str, limit: int, lease_s: float,
                    kinds: list[str]) -> Lease:
        lease: Lease = await self.catalogue.lease(holder, limit, lease_s, kinds)
        return lease

    async def heartbeat(self, holder: str, progress: dict[str, float | None],
                        lease_s: float) -> HeartbeatReply:
        reply: HeartbeatReply = await self.catalogue.heartbeat(holder, progress, lease_s)
        return reply

    async def finish(self, job_id: str, holder: str, outcome: JobOutcome, *,
                     result: dict[str, Any] | None = None, error: ErrorInfo | None = None,
                     track: Sidecar | None = None) -> JobOutcome | None:
        return await self._finishes.one(FinishRequest(
            job_id=job_id, holder=holder, outcome=outcome, result=result, error=error,
            track=track))

    async def _finish_many(self, requests: list[FinishRequest]) -> list[JobOutcome | None]:
        done: list[JobOutcome | None] = await self.catalogue.finish_many(requests)
        return done

    async def retry_later(self, job_id: str, holder: str, delay_s: float,
                          error: ErrorInfo) -> bool:
        ok: bool = await self.catalogue.retry_later(job_id, holder, delay_s, error)
        return ok

    async def cancel(self, job_id: str) -> JobRecord:
        job: JobRecord = await self.catalogue.cancel(job_id)
        return job

    async def get(self, job_id: str) -> JobRecord | None:
        job: JobRecord | None = await self.catalogue.job(job_id)
        return job

    async def depth(self) -> int:
        depth: int = await self.catalogue.queue_depth()
        return depth
