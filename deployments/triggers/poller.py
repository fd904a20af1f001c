"""The incoming/ poller: object-store triggers for stores without bucket notifications.

Each poll lists the incoming prefix with ListObjectsV2 from a cursor kept in the catalogue
(the last key handled), skips object versions that already have an event record, and feeds
the rest to the event handler. The cursor only moves past keys whose events are recorded, so
a restart resumes where the last run stopped without reprocessing. Keys that sort before the
cursor (uploaded later under an "earlier" name) and anything a lost webhook missed are found
by the periodic full reconciliation, which lists from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from deployments.triggers.handler import EventHandler, EventResult
from deployments.triggers.minio_events import ObjectEvent
from musicfn.errors import MusicfnError
from storage.objects import ObjectInfo

log = logging.getLogger(__name__)
PAGE = 200


class PollReport(BaseModel):
    """What one poll did."""

    listed: int = 0
    known: int = 0
    outcomes: dict[str, int] = {}
    cursor: str | None = None
    full: bool = False

    def add(self, result: EventResult) -> None:
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1


class Poller:
    """Lists incoming/ and hands new object versions to the handler."""

    def __init__(self, handler: EventHandler, *, concurrency: int | None = None) -> None:
        self.handler = handler
        self.settings = handler.settings
        self.catalogue = handler.catalogue
        self.concurrency = concurrency or self.settings.event_concurrency
        self.cursor_name = f"poller:{self.settings.bucket}/{self.settings.incoming_prefix}/"

    async def poll_once(self, *, full: bool = False,
                        on_result: Callable[[EventResult], None] | None = None) -> PollReport:
        """One pass: from the cursor, or from the start with ``full``."""
        start = None if full else await self.catalogue.get_cursor.remote(self.cursor_name)
        report = PollReport(full=full, cursor=start)
        listing = self.handler.objects.list(f"{self.settings.incoming_prefix}/",
                                            start_after=start, page_size=PAGE)
        while True:
            page = await asyncio.to_thread(_take, listing, PAGE)
            if not page:
                return report
            report.listed += len(page)
            known: set[str] = await self.catalogue.known_objects.remote(
                self.settings.bucket, [(o.key, o.etag) for o in page])
            report.known += len(known)
            todo = [o for o in page if o.key not in known]
            for result in await self._handle_all(todo):
                report.add(result)
                if on_result is not None:
                    on_result(result)
            # Every event of this page is recorded (a failure raised above): move past it.
            last = page[-1].key
            if start is None or last > start:
                await self.catalogue.set_cursor.remote(self.cursor_name, last)
                report.cursor = last

    async def _handle_all(self, infos: list[ObjectInfo]) -> list[EventResult]:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(info: ObjectInfo) -> EventResult:
            async with sem:
                return await self.handler.handle(ObjectEvent(
                    kind="created", bucket=self.settings.bucket, key=info.key,
                    etag=info.etag, source="poller", event_time=info.last_modified))

        return list(await asyncio.gather(*(one(i) for i in infos)))

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
