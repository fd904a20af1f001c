"""Coalesced calls on the catalogue owner: many concurrent small writes, one transaction.

Every owner call is one DuckDB transaction, and a commit costs ~2 ms (the WAL is synced)
however small the write: a runner handling dozens of object events at once spent most of the
owner's time on one claim, one track and one event record per event. Here concurrent calls of
one process are coalesced: the first goes out at once, and the ones that arrive while it is in
flight go out together as the next call (so no call waits longer than one round trip for
company). A batch fails as a whole: each caller sees the error and retries as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from storage.catalogue.client import CatalogueClient
from storage.catalogue.events import ClaimRequest, EventClaim, EventRecord
from storage.catalogue.schema import sidecars_table
from storage.sidecar import Sidecar

T = TypeVar("T")
R = TypeVar("R")
MAX_BATCH = 256


class Coalescer(Generic[T, R]):
    """Turns ``await one(item)`` from many tasks into ``await many(items)`` calls."""

    def __init__(self, many: Callable[[list[T]], Awaitable[list[R]]], *,
                 max_batch: int = MAX_BATCH, max_inflight: int = 1) -> None:
        """``max_inflight`` calls of ``many`` at most at once, each of ``max_batch`` items
        at most."""
        self._many = many
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drains: set[asyncio.Task[None]] = set()

    async def one(self, item: T) -> R:
        """``many([item, ...])``'s answer for ``item``."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if sum(not d.done() for d in self._drains) < self._max_inflight:
            drain = asyncio.create_task(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        try:
            return await future
        except asyncio.CancelledError:  # not sent yet: drop it (sent: the owner decides)
            self._queue = [(i, f) for i, f in self._queue if f is not future]
            raise

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:self._max_batch]
            self._queue = self._queue[self._max_batch:]
            try:
                results = await self._many([item for item, _ in batch])
            except BaseException as exc:  # every caller of the batch sees it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class OwnerBatcher:
    """Claims and upload completions on the owner actor ``catalogue``, coalesced."""

    def __init__(self, catalogue: CatalogueClient) -> None:
        self.catalogue = catalogue
        self._claims: Coalescer[ClaimRequest, EventClaim] = Coalescer(self._claim_many)
        self._completions: Coalescer[tuple[Sidecar | None, EventRecord], None] = \
            Coalescer(self._complete_many)

    async def claim(self, request: ClaimRequest) -> EventClaim:
        """``claim_event`` (``storage.catalogue.events``), batched with concurrent claims."""
        return await self._claims.one(request)

    async def complete(self, track: Sidecar | None, event: EventRecord) -> None:
        """Index ``track`` (if any) and record ``event``, batched with concurrent ones."""
        await self._completions.one((track, event))

    async def _claim_many(self, requests: list[ClaimRequest]) -> list[EventClaim]:
        claims: list[EventClaim] = await self.catalogue.claim_events(requests)
        return claims

    async def _complete_many(self, items: list[tuple[Sidecar | None, EventRecord]]
                             ) -> list[None]:
        tracks = [t for t, _ in items if t is not None]
        rows = sidecars_table(tracks) if tracks else None  # built here, not in the owner
        await self.catalogue.complete_uploads(rows if rows is not None else [],
                                                     [e for _, e in items])
        return [None] * len(items)
