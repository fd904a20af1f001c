"""The incoming/ poller: object-store triggers for stores without bucket notifications.

Each poll lists the incoming prefix with ListObjectsV2 from a cursor kept in the catalogue
(the last key handled), skips object versions that already have an event record, and enqueues
an event job for each of the rest (deduplicated by object version; runners process them).
The cursor only moves past keys whose jobs are accepted, so a restart resumes where the last
run stopped without reprocessing. Keys that sort before the cursor (uploaded later under an
"earlier" name) and anything a lost webhook missed are found by the periodic full
reconciliation, which lists from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from jobs.model import EventPayload, ObjectEvent, dump
from jobs.queue import JobQueue
from musicfn.errors import MusicfnError
from musicfn.settings import Settings
from storage.keys import new_id
from storage.objects import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)
PAGE = 200


class PollReport(BaseModel):
    """What one poll did."""

    listed: int = 0
    known: int = 0
    enqueued: int = 0
    duplicate: int = 0
    cursor: str | None = None
    full: bool = False
    job_ids: list[str] = []


class Poller:
    """Lists incoming/ and enqueues new object versions as event jobs."""

    def __init__(self, queue: JobQueue, objects: ObjectStore, settings: Settings, *,
                 nudge: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.queue = queue
        self.objects = objects
        self.settings = settings
        self.nudge = nudge  # tells runners work is waiting (else they find it at their poll)
        self.catalogue = queue.catalogue
        self.cursor_name = f"poller:{self.settings.bucket}/{self.settings.incoming_prefix}/"

    async def poll_once(self, *, full: bool = False) -> PollReport:
        """One pass: from the cursor, or from the start with ``full``."""
        start = None if full else await self.catalogue.get_cursor(self.cursor_name)
        report = PollReport(full=full, cursor=start)
        listing = self.objects.list(f"{self.settings.incoming_prefix}/",
                                            start_after=start, page_size=PAGE)
        while True:
            page = await asyncio.to_thread(_take, listing, PAGE)
            if not page:
                return report
            report.listed += len(page)
            known: set[str] = await self.catalogue.known_objects(
                self.settings.bucket, [(o.key, o.etag) for o in page])
            report.known += len(known)
            todo = [o for o in page if o.key not in known]
            for done in await self.queue.submit([self._job(o) for o in todo]):
                report.enqueued += done.created
                report.duplicate += not done.created
                report.job_ids.append(done.job_id)
            if todo and self.nudge is not None:
                with contextlib.suppress(Exception):  # best effort: runners also poll
                    await asyncio.wait_for(self.nudge(), 2.0)
            # Every event of this page is a job now (a failure raised above): move past it.
            last = page[-1].key
            if start is None or last > start:
                await self.catalogue.set_cursor(self.cursor_name, last)
                report.cursor = last

    def _job(self, info: ObjectInfo) -> Any:
        event = ObjectEvent(kind="created", bucket=self.settings.bucket, key=info.key,
                            etag=info.etag, source="poller", event_time=info.last_modified)
        return self.queue.new_job(new_id(), "event", dump(EventPayload(event=event)),
                                  dedupe_key=event.dedupe_key())

    async def run(self, *, stop: asyncio.Event | None = None,
                  on_report: Callable[[PollReport], None] | None = None) -> None:
        """Poll every ``poll_interval_s`` and reconcile every ``reconcile_interval_s``
        (the first pass is a full one), until ``stop`` is set. Faults are logged and the
        next pass tries again."""
        stop = stop or asyncio.Event()
        next_full = 0.0
        while not stop.is_set():
            full = time.monotonic() >= next_full
            try:
                report = await self.poll_once(full=full)
                if full:
                    next_full = time.monotonic() + self.settings.reconcile_interval_s
                if on_report is not None:
                    on_report(report)
            except MusicfnError as exc:
                log.warning("poll failed, retrying in %.0f s: %s", self.settings.poll_interval_s,
                            exc.message)
            except Exception:  # the catalogue owner restarting, a Ray hiccup: keep polling
                log.exception("poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_interval_s)


def _take(it: Any, n: int) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out
