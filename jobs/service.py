"""Composition of the job layer for one process: a queue client and a runner with every kind
of work wired to the bucket, the catalogue owner and (for generations) the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jobs.batches import BatchWork
from jobs.engine_client import EngineClient
from jobs.generation import GenerationWork
from jobs.job_context import Work
from jobs.queue import JobQueue
from jobs.runner import Runner
from jobs.uploads import EventHandler, UploadWork
from jobs.webhook_signing import validate_secret
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.jobs_schema import JobRecord
from storage.objects import ObjectStore
from storage.tracks import TrackStore


def job_queue(catalogue: CatalogueClient, settings: Settings) -> JobQueue:
    """The queue client over the catalogue owner, with the configured attempt budget."""
    return JobQueue(catalogue, max_attempts=settings.job_max_attempts)


def build_runner(settings: Settings, catalogue: CatalogueClient, engine: Any | None, *,
                 concurrency: int | None = None) -> Runner:
    """A runner for every job kind; without ``engine`` it runs events and batches only.

    Raises ConfigurationError for a malformed ``MUSICFN_WEBHOOK_SECRET`` (at start, not at
    the first callback)."""
    if settings.webhook_secret is not None:
        validate_secret(settings.webhook_secret.get_secret_value())
    objects = ObjectStore(settings)
    queue = job_queue(catalogue, settings)
    work: dict[str, Work] = {
        "event": UploadWork(EventHandler(objects, catalogue, settings)),
        "batch": BatchWork(queue, objects, settings),
    }
    if engine is not None:
        work["generation"] = GenerationWork(EngineClient(engine), catalogue,
                                            TrackStore(objects, settings), settings)
    return Runner(queue, work, concurrency=concurrency or settings.runner_concurrency,
                  lease_s=settings.job_lease_s, poll_s=settings.job_poll_interval_s)


async def run_until_done(runner: Runner, job_ids: list[str], *, parent_id: str | None = None,
                         poll_s: float = 0.25,
                         on_progress: Callable[[list[JobRecord]], None] | None = None
                         ) -> list[JobRecord]:
    """Run ``runner`` in this process until the jobs ``job_ids`` (and, with ``parent_id``,
    every job it spawned) have ended; returns them as they ended. A running service's
    runners may take some of them: that is fine, the jobs end once either way."""
    stop = asyncio.Event()
    loop = asyncio.create_task(runner.run(stop))
    catalogue = runner.queue.catalogue
    try:
        while True:
            jobs = [j for j in await asyncio.gather(
                *(catalogue.job(i) for i in job_ids)) if j is not None]
            if parent_id is not None:
                jobs += await catalogue.jobs_of(parent_id)
            if on_progress is not None:
                on_progress(jobs)
            if all(j.state == "done" for j in jobs):
                return jobs
            runner.nudge()
            await asyncio.sleep(poll_s)
    finally:
        stop.set()
        await loop


def outcome_counts(jobs: list[JobRecord]) -> dict[str, int]:
    """How many ended jobs had each outcome (an event's own outcome: processed, duplicate,
    rejected, ...; else the job's: failed, canceled)."""
    counts: dict[str, int] = {}
    for job in jobs:
        outcome = str((job.result or {}).get("outcome") or job.outcome or "failed")
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
