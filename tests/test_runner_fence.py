"""Only the holder of a job's lease writes its results: real runners on a real catalogue file
and the session's real S3.

The owner here is a ``Catalogue`` called in threads (what the Ray actor does), so a test
can cut one runner off from it: its heartbeats hang, as they do when the owner is unreachable
or the runner's event loop is starved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobs.job_context import JobContext, JobEnd
from jobs.pipeline import run_to_end
from jobs.queue import JobQueue
from jobs.runner import Runner
from storage.catalogue.client import CatalogueClient
from storage.catalogue.store import Catalogue
from storage.jobs_schema import JobOutcome, JobRecord
from storage.keys import new_id
from storage.objects import ObjectStore


class _Method:
    def __init__(self, owner: _Owner, name: str) -> None:
        self.owner, self.name = owner, name

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        async def call() -> Any:
            if self.name in self.owner.cut_off:
                await asyncio.Event().wait()  # never answers
            return await asyncio.to_thread(getattr(self.owner.target, self.name), *args,
                                           **kwargs)
        return asyncio.ensure_future(call())


class _Owner:
    """``target``'s methods as ``.remote`` calls, the way an ActorHandle offers them."""

    def __init__(self, target: Catalogue, cut_off: tuple[str, ...] = ()) -> None:
        self.target, self.cut_off = target, set(cut_off)

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


@dataclass
class SlowStore:
    """A job that computes for ``compute_s``, then writes its runner's name to ``out/<id>``
    in a thread whose write takes ``write_s`` (a slow PUT), fenced like the real store."""

    objects: ObjectStore
    name: str
    compute_s: float
    write_s: float = 0.0
    writing: threading.Event = field(default_factory=threading.Event)
    thread_done: threading.Event = field(default_factory=threading.Event)
    wrote: bool = False

    async def run(self, job: JobRecord, ctx: JobContext) -> JobEnd:
        await asyncio.sleep(self.compute_s)
        ctx.storing = True
        try:
            await ctx.ensure_lease()
            await run_to_end(lambda: self._write(job.id, ctx))
        finally:
            ctx.storing = False
        return JobEnd("completed", result={"by": self.name})

    def _write(self, job_id: str, ctx: JobContext) -> None:
        self.writing.set()
        try:
            time.sleep(self.write_s)
            ctx.check_lease()
            self.objects.put(f"out/{job_id}", self.name.encode(), content_type="text/plain")
            self.wrote = True
        finally:
            self.thread_done.set()

    async def discard(self, job: JobRecord) -> None:
        await asyncio.to_thread(self.objects.delete, f"out/{job.id}")

    async def exhausted(self, job: JobRecord) -> JobEnd:
        return JobEnd("failed")

    async def ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        return None


def runner(catalogue: Catalogue, work: SlowStore, *, lease_s: float,
           cut_off: tuple[str, ...] = ()) -> Runner:
    queue = JobQueue(CatalogueClient(_Owner(catalogue, cut_off)), max_attempts=5)
    return Runner(queue, {"event": work}, concurrency=1, lease_s=lease_s, poll_s=0.1,
                  holder=work.name)


async def until(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "jobs.duckdb")


def one_job(catalogue: Catalogue) -> str:
    job_id = new_id()
    catalogue.enqueue([JobRecord(id=job_id, kind="event", max_attempts=5)])
    return job_id


def test_a_runner_cut_off_from_the_owner_does_not_write_after_its_lease(
        catalogue: Catalogue, objects: ObjectStore) -> None:
    job_id = one_job(catalogue)
    cut = SlowStore(objects, "cut-off", compute_s=2.5)
    healthy = SlowStore(objects, "healthy", compute_s=0.1)

    async def scenario() -> None:
        stop = asyncio.Event()
        a = runner(catalogue, cut, lease_s=1.0, cut_off=("heartbeat",))
        loop_a = asyncio.create_task(a.run(stop))
        await until(lambda: job_id in a.running)
        b = runner(catalogue, healthy, lease_s=5.0)  # takes the job once A's lease expired
        loop_b = asyncio.create_task(b.run(stop))
        await until(lambda: (catalogue.job(job_id) or JobRecord(id="", kind="event")).state
                    == "done")
        await until(lambda: job_id not in a.running)  # A reached its store step, and stopped
        stop.set()
        await asyncio.gather(loop_a, loop_b)

    asyncio.run(scenario())
    job = catalogue.job(job_id)
    assert job is not None and job.outcome == "completed" and job.result == {"by": "healthy"}
    assert objects.get(f"out/{job_id}") == b"healthy"  # the row's writer is the object's
    assert healthy.wrote and not cut.wrote


def test_cancel_during_a_write_waits_for_it_then_discards(
        catalogue: Catalogue, objects: ObjectStore) -> None:
    job_id = one_job(catalogue)
    work = SlowStore(objects, "slow", compute_s=0.0, write_s=2.0)

    async def scenario() -> None:
        stop = asyncio.Event()
        r = runner(catalogue, work, lease_s=1.5)
        loop = asyncio.create_task(r.run(stop))
        await until(work.writing.is_set)
        await asyncio.to_thread(catalogue.cancel, job_id)
        await until(lambda: job_id not in r.running)
        stop.set()
        await loop

    asyncio.run(scenario())
    job = catalogue.job(job_id)
    assert job is not None and job.outcome == "canceled"
    assert work.thread_done.is_set() and not work.wrote
    assert not objects.exists(f"out/{job_id}")  # nothing left behind by the late write


def test_drain_hands_a_job_back_only_after_its_write_ended(
        catalogue: Catalogue, objects: ObjectStore) -> None:
    job_id = one_job(catalogue)
    draining = SlowStore(objects, "draining", compute_s=0.0, write_s=1.5)
    taker = SlowStore(objects, "taker", compute_s=0.0)

    async def scenario() -> None:
        stop = asyncio.Event()
        a = runner(catalogue, draining, lease_s=30.0)
        loop_a = asyncio.create_task(a.run(stop))
        await until(draining.writing.is_set)
        await a.drain(timeout_s=0.1)
        assert draining.thread_done.is_set()  # the write ended before the hand-back
        b = runner(catalogue, taker, lease_s=30.0)
        loop_b = asyncio.create_task(b.run(stop))
        await until(lambda: (catalogue.job(job_id) or JobRecord(id="", kind="event")).state
                    == "done")
        stop.set()
        await asyncio.gather(loop_a, loop_b)

    asyncio.run(scenario())
    job = catalogue.job(job_id)
    assert job is not None and job.outcome == "completed" and job.result == {"by": "taker"}
    assert objects.get(f"out/{job_id}") == b"taker"
