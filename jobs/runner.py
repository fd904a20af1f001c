"""The runner loop: lease jobs from the queue, run them, heartbeat, finish each exactly once.

A runner is pull-based: any number of them, on any node, share one queue. Each holds up to
``concurrency`` jobs; ``nudge`` wakes it at once when work arrives (the ingress calls it after
accepting a job), and it polls every ``poll_s`` otherwise, which is also how it finds jobs whose
runner died (their lease expired). Leases are renewed every ``lease_s / 3``.

How a job ends:

* its work returns a ``JobEnd`` → ``finish`` (the owner ignores it if the lease was lost);
* the work raises an unexpected error → the job goes back to the queue after a backoff, and
  another lease counts another attempt;
* a cancel was requested → the task is cancelled, what it stored is discarded, ``canceled``;
* the runner dies → the lease expires and another runner re-drives the job with the same id
  (so the same keys); past ``max_attempts`` it is dead-lettered as ``interrupted``.

Only the holder writes. A runner cut off from the owner (late heartbeats) may still be running
when its lease passes to another, so every write is fenced (``JobContext.check_lease``): it
goes ahead only while the lease surely holds for another ``lease_s / 3``. Cancelling a job,
losing its lease or handing it back waits for a write under way, so no writer outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.job_context import JobContext, JobEnd, Work
from jobs.queue import JobQueue
from musicfn import metrics
from musicfn.errors import LeaseLostError, MusicfnError, original_error
from musicfn.logs import job_context, request_context
from storage.jobs_schema import JobOutcome, JobRecord
from storage.sidecar import ErrorInfo

log = logging.getLogger(__name__)
# How long a draining runner waits for cancelled jobs to end: a store step under way ends
# first (its writes stop at the fence), and that is short.
STORE_GRACE_S = 15.0
RETRY_DELAYS_S = (1.0, 5.0, 15.0)


def holder_id() -> str:
    """A lease holder name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Running:
    job: JobRecord
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    cancel: bool = False


@dataclass
class RunnerStats:
    """Counters for status pages and tests."""

    leased: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    lost: int = 0
    exhausted: int = 0


class Runner:
    """Leases and runs jobs until ``stop`` is set (see the module docstring)."""

    def __init__(self, queue: JobQueue, work: Mapping[str, Work], *, concurrency: int,
                 lease_s: float, poll_s: float, holder: str | None = None) -> None:
        self.queue = queue
        self.work = dict(work)
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.holder = holder or holder_id()
        self.running: dict[str, _Running] = {}
        self.stats = RunnerStats()
        self._wake = asyncio.Event()
        self._draining = False
        self._backlog = False  # the last lease filled every free slot: more may be waiting

    def nudge(self) -> None:
        """Work may be waiting: look now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: lease when there is room, heartbeat, wait for a nudge or the poll."""
        next_beat = time.monotonic() + self.lease_s / 3
        while not stop.is_set():
            self._wake.clear()
            try:
                if not self._draining and len(self.running) < self.concurrency:
                    await self._lease()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.lease_s / 3
                    # Bounded: an answer after lease_s is worthless, the leases are gone.
                    await asyncio.wait_for(self._heartbeat(), timeout=self.lease_s)
            except Exception as exc:  # the owner restarting, a Ray hiccup: try again soon
                log.warning("job runner loop: %s", type(original_error(exc)).__name__)
            waiters = [asyncio.ensure_future(self._wake.wait()),
                       asyncio.ensure_future(stop.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait(waiters, return_when="FIRST_COMPLETED"),
                                       timeout=min(self.poll_s, max(0.05, next_beat
                                                                    - time.monotonic())))
            for w in waiters:
                w.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Stop leasing; wait up to ``timeout_s`` for running jobs, then hand the rest back
        to the queue so another runner starts them at once. A job is handed back only once
        its task has ended (a store step under way finishes or stops at the fence first), so
        no writer of ours is left behind when another runner takes it."""
        self._draining = True
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        handing_back = dict(self.running)
        for r in handing_back.values():
            if r.task is not None:
                r.task.cancel()
        ending = [r.task for r in handing_back.values() if r.task is not None]
        if ending:
            await asyncio.wait(ending, timeout=STORE_GRACE_S)
        for job_id, r in handing_back.items():
            r.ctx.revoke()
            with contextlib.suppress(Exception):
                await self.queue.retry_later(job_id, self.holder, 0.0, ErrorInfo(
                    code="runner_stopped", message="the runner holding the job stopped"))

    def status(self) -> dict[str, Any]:
        """Holder, jobs in flight, counters."""
        return {"holder": self.holder, "running": sorted(self.running),
                "concurrency": self.concurrency, "leased": self.stats.leased,
                "finished": dict(self.stats.finished), "retried": self.stats.retried,
                "lost": self.stats.lost, "exhausted": self.stats.exhausted}

    # -- internals -------------------------------------------------------------------------

    async def _lease(self) -> None:
        room = self.concurrency - len(self.running)
        sent = time.monotonic()
        lease = await self.queue.lease(self.holder, room, self.lease_s, sorted(self.work))
        self._backlog = len(lease.run) + len(lease.exhausted) >= room
        for job in [*lease.run, *lease.exhausted]:
            self.stats.leased += 1
            r = _Running(job, self._context(job.id, sent + self.lease_s))
            self.running[job.id] = r
            runner = self._exhaust(job) if job in lease.exhausted else self._execute(r)
            r.task = asyncio.create_task(runner, name=f"job-{job.id}")
        if lease.run:
            metrics.set_queue_depth("JobRunner", len(self.running))

    def _context(self, job_id: str, lease_until: float) -> JobContext:
        async def renew() -> None:  # from inside the job: revoke, but don't cancel itself
            await self._renew({job_id}, stop=False)

        return JobContext(self.holder, lease_until=lease_until,
                          fence_margin_s=self.lease_s / 3, renew=renew)

    async def _heartbeat(self) -> None:
        if self.running:
            await self._renew(set(self.running), stop=True)

    async def _renew(self, ids: set[str], *, stop: bool) -> None:
        """Extend the leases on ``ids``. Jobs whose lease was lost, and those asked to
        cancel, have their fence closed and (with ``stop``) their task cancelled."""
        sent = time.monotonic()
        reply = await self.queue.heartbeat(
            self.holder, {i: r.ctx.progress for i, r in self.running.items() if i in ids},
            self.lease_s)
        for job_id in ids - set(reply.lost) - set(reply.cancel):
            r = self.running.get(job_id)
            if r is not None and r.ctx.lease_until > -math.inf:
                r.ctx.lease_until = max(r.ctx.lease_until, sent + self.lease_s)
        for job_id in reply.lost:  # another runner may have it now: stop without finishing
            r = self.running.get(job_id)
            if r is not None and r.task is not None:
                self.stats.lost += 1
                log.warning("job %s: lease lost; stopping it here", job_id)
                r.ctx.revoke()
                if stop:
                    r.task.cancel()
        for job_id in reply.cancel:
            r = self.running.get(job_id)
            if r is not None and r.task is not None and not r.cancel:
                r.cancel = True
                r.ctx.revoke()
                if stop:
                    r.task.cancel()

    async def _execute(self, r: _Running) -> None:
        job = r.job
        work = self.work[job.kind]
        request_id = job.payload.get("request_id")
        traced = request_context(str(request_id)) if request_id else contextlib.nullcontext()
        with job_context(job.id), traced:
            try:
                try:
                    end = await work.run(job, r.ctx)
                except asyncio.CancelledError:
                    if r.cancel:
                        await work.discard(job)
                        await self._finish(job, work, JobEnd("canceled"))
                    return
                except LeaseLostError:  # stopped at the fence: another runner re-drives it
                    if r.cancel:
                        await work.discard(job)
                        await self._finish(job, work, JobEnd("canceled"))
                    else:
                        log.warning("job %s: lease not sure before writing; left to the "
                                    "runner that holds it next", job.id)
                    return
                except Exception as exc:
                    await self._retry(job, exc)
                    return
                outcome = await self._finish(job, work, end)
                if outcome == "canceled" and end.outcome != "canceled":
                    await work.discard(job)  # canceled while it was being stored
            finally:
                self._freed(job.id)

    def _freed(self, job_id: str) -> None:
        """A slot is free: with a backlog, lease again now instead of at the next poll (a
        burst of short jobs would otherwise wait ``poll_s`` for each refill)."""
        self.running.pop(job_id, None)
        if self._backlog:
            self._wake.set()

    async def _exhaust(self, job: JobRecord) -> None:
        work = self.work[job.kind]
        self.stats.exhausted += 1
        try:
            with job_context(job.id):
                await self._finish(job, work, await work.exhausted(job))
        except Exception:  # leave it leased: it comes back after the lease, still exhausted
            log.exception("job %s: could not dead-letter", job.id)
        finally:
            self._freed(job.id)

    async def _finish(self, job: JobRecord, work: Work, end: JobEnd) -> JobOutcome | None:
        """``finish`` with retries over an owner restart; then the work's ``ended`` hook."""
        for delay in (0.0, 0.5, 2.0, 5.0):
            await asyncio.sleep(delay)
            try:
                outcome = await self.queue.finish(job.id, self.holder, end.outcome,
                                                  result=end.result, error=end.error,
                                                  track=end.track)
                break
            except Exception as exc:
                log.warning("job %s: finish failed (%s)", job.id, type(exc).__name__)
        else:
            return None  # the lease expires and another runner re-drives it
        if outcome is None:
            self.stats.lost += 1
            return None
        self.stats.finished[outcome] = self.stats.finished.get(outcome, 0) + 1
        try:
            await work.ended(job, outcome)
        except Exception:
            log.exception("job %s: after-end hook failed", job.id)
        return outcome

    async def _retry(self, job: JobRecord, exc: BaseException) -> None:
        original = original_error(exc)
        if isinstance(original, MusicfnError):
            error = ErrorInfo(code=original.code, message=original.message, stage="run")
            log.warning("job %s: %s; retrying later", job.id, original.message)
        else:
            log.exception("job %s failed unexpectedly; retrying later", job.id,
                          exc_info=original)
            error = ErrorInfo(code="internal_error", stage="run",
                              message=f"{type(original).__name__} while running the job")
        self.stats.retried += 1
        delay = RETRY_DELAYS_S[min(job.attempts, len(RETRY_DELAYS_S)) - 1]
        with contextlib.suppress(Exception):
            await self.queue.retry_later(job.id, self.holder, delay, error)
