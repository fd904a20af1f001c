"""Watching jobs for ``?wait=`` and the SSE stream: one catalogue query per tick per replica.

However many requests wait, the replica asks the owner once per ``interval_s`` for the
(status, progress) of every watched id and wakes the waiters whose job changed. A waiter holds
no thread and no Serve slot beyond its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from storage.catalogue.client import CatalogueClient
from storage.sidecar import FINAL_STATUSES

log = logging.getLogger(__name__)
Status = tuple[str, float | None]


class StatusWatcher:
    """Shared polling of job statuses for one ingress replica."""

    def __init__(self, catalogue: CatalogueClient, interval_s: float = 0.2) -> None:
        self.catalogue = catalogue
        self.interval_s = interval_s
        self._queues: dict[str, set[asyncio.Queue[Status]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def changes(self, track_id: str, first: Status) -> AsyncIterator[Status]:
        """``first``, then each new (status, progress) of the job until a final status."""
        last = first
        yield first
        if first[0] in FINAL_STATUSES:
            return
        queue: asyncio.Queue[Status] = asyncio.Queue()
        self._queues.setdefault(track_id, set()).add(queue)
        self._ensure_running()
        try:
            while True:
                status = await queue.get()
                if status == last:
                    continue
                last = status
                yield status
                if status[0] in FINAL_STATUSES:
                    return
        finally:
            waiters = self._queues.get(track_id)
            if waiters is not None:
                waiters.discard(queue)
                if not waiters:
                    del self._queues[track_id]

    async def until_final(self, track_id: str, first: Status, timeout_s: float) -> Status:
        """The job's status once final, or as it is when ``timeout_s`` runs out."""
        last = first
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for status in self.changes(track_id, first):
                    last = status
        return last

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while self._queues:
            await asyncio.sleep(self.interval_s)
            ids = list(self._queues)
            try:
                statuses: dict[str, Status] = await self.catalogue.statuses(ids)
            except Exception as exc:  # owner restarting: the next tick tries again
                log.info("status watch: %s", type(exc).__name__)
                continue
            for track_id, status in statuses.items():
                for queue in self._queues.get(track_id, ()):
                    queue.put_nowait(tuple(status))  # type: ignore[arg-type]
