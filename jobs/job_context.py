"""What a job's work sees of its runner: the ``Work`` protocol, the ``JobEnd`` it returns,
and the ``JobContext`` it reports progress through and fences its writes with (only the
holder of a job's lease writes; see ``jobs.runner``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from musicfn.errors import LeaseLostError
from storage.jobs_schema import JobOutcome, JobRecord
from storage.sidecar import ErrorInfo, Sidecar


@dataclass
class JobEnd:
    """How a job's work ended: what ``finish`` records."""

    outcome: JobOutcome
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    track: Sidecar | None = None


@dataclass
class JobContext:
    """What a running job may tell its runner (progress goes out with the heartbeat), and
    the fence on its writes: how long its lease surely holds."""

    holder: str
    progress: float | None = None
    # True while the job writes its results: a store step runs in a thread that cancelling
    # the task would not stop, so a draining runner lets it finish before handing the job back.
    storing: bool = False
    # Monotonic time until which the lease surely holds: the owner extends a lease to its
    # arrival + lease_s, which is no earlier than the request's send + lease_s.
    lease_until: float = math.inf
    # Writes stop this long before ``lease_until``: one write in flight may still land
    # after the check, and must land before anyone else can hold the job.
    fence_margin_s: float = 0.0
    renew: Callable[[], Awaitable[None]] | None = None

    def check_lease(self) -> None:
        """The fence, called before each write: ``LeaseLostError`` unless the lease holds
        for longer than the margin."""
        if time.monotonic() > self.lease_until - self.fence_margin_s:
            raise LeaseLostError("the job's lease may have passed to another runner: "
                                 "not writing")

    def write_deadline(self) -> float:
        """The fence as a wall-clock (epoch) time, for a write made in another process (a
        Ray task): no write may start after it. Conservative: renewals after this call do
        not move it."""
        return time.time() + (self.lease_until - self.fence_margin_s - time.monotonic())

    def revoke(self) -> None:
        """The lease is gone (lost, canceled, handed back): every later write is refused."""
        self.lease_until = -math.inf

    async def ensure_lease(self) -> None:
        """Before a store step: renew the lease now unless it holds for two margins more
        (so a steady heartbeat never trips the fence midway); ``LeaseLostError`` if lost."""
        left = self.lease_until - self.fence_margin_s - time.monotonic()
        if self.renew is not None and left < self.fence_margin_s:
            # An owner that does not answer before the fence closes is as good as a no.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.renew(), timeout=max(0.0, left))
        self.check_lease()


class Work(Protocol):
    """Runs one kind of job."""

    async def run(self, job: JobRecord, ctx: JobContext) -> JobEnd:
        """Do the job; return how it ended (raise only for faults worth another attempt)."""
        ...

    async def discard(self, job: JobRecord) -> None:
        """Remove what a canceled job may have stored."""
        ...

    async def exhausted(self, job: JobRecord) -> JobEnd:
        """The job ran out of attempts: dead-letter it; return its failed end."""
        ...

    async def ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        """After the job's end is recorded (callbacks)."""
        ...


def deadline_fence(deadline: float | None) -> Callable[[], None] | None:
    """A fence for ``storage.tracks.TrackStore.write`` from ``JobContext.write_deadline``
    (None: unfenced): ``LeaseLostError`` once the wall clock passed it."""
    if deadline is None:
        return None

    def check() -> None:
        if time.time() > deadline:
            raise LeaseLostError("the job's lease may have passed to another runner: "
                                 "not writing")

    return check
