"""What routes depend on: one ``Services`` per ingress replica, reached as a typed dependency.

The Serve ``Ingress`` builds it once per replica process (``deployments.ingress``) and installs
it with ``set_services`` (Serve serves a copy of the FastAPI app, so ``app.state`` would not
reach the routes); routes declare ``services: ServicesDep`` and construct nothing themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends

from deployments.api.read_cache import FinalRecords
from deployments.api.watch import StatusWatcher
from deployments.served_models import ModelTable, ReplicaModels
from engines.requests import Limits, engine_of
from jobs.queue import JobQueue
from musicfn.errors import (
    ConfigurationError,
    MusicfnError,
    NotFoundError,
    StorageUnreachableError,
)
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.jobs_schema import JobView
from storage.keys import validate_id
from storage.objects import ObjectStore
from storage.tracks import TrackStore

log = logging.getLogger(__name__)
LIMITS_TTL_S = 5.0
STORAGE_HEALTH_TTL_S = 3.0


@dataclass
class LiveLimits:
    """The limits in force: the MusicGen deployment's live ``user_config.limits`` (their one
    owner) with ``max_duration_s`` capped at the engine's own maximum, cached for a few
    seconds; the last known values (or the defaults) while the engine is unreachable."""

    engine: Any
    ttl_s: float = LIMITS_TTL_S
    _value: Limits = field(default_factory=Limits)
    _at: float = float("-inf")

    async def get(self) -> Limits:
        """The current limits."""
        if time.monotonic() - self._at > self.ttl_s:
            with contextlib.suppress(Exception):  # keep the last known limits
                limits, info = await asyncio.wait_for(asyncio.gather(
                    self.engine.limits.remote(), self.engine.describe.remote()), 2.0)
                engine_max = float(info["supports"]["max_duration_s"])
                self._value = limits.model_copy(update={
                    "max_duration_s": min(limits.max_duration_s, engine_max)})
            self._at = time.monotonic()
        return self._value


@dataclass
class LiveModels:
    """The models requests may name: the MusicGen deployment's table (its one owner, from its
    config), cached for a few seconds; the last known table (or ``fallback`` alone) while the
    engine is unreachable."""

    engine: Any
    fallback: str
    ttl_s: float = LIMITS_TTL_S
    _value: ModelTable | None = None
    _at: float = float("-inf")

    async def get(self) -> ModelTable:
        """The current table."""
        if time.monotonic() - self._at > self.ttl_s:
            # The first answer is worth a longer wait: the fallback knows one model only.
            wait_s = 2.0 if self._value is not None else 10.0
            with contextlib.suppress(Exception):  # keep the last known table
                report: ReplicaModels = await asyncio.wait_for(self.engine.models.remote(),
                                                               wait_s)
                self._value = report.table
            self._at = time.monotonic()
        return self._value or ModelTable.single(self.fallback)

    async def replicas(self, timeout_s: float = 5.0) -> dict[str, ReplicaModels]:
        """What the replicas hold, by replica id: one ``models()`` call routed as a request
        for each served model (Serve sends it to a replica holding that model) and one
        unrouted. Complete for one replica; with several, a replica whose models another
        replica also holds may be missing (best effort, never an error)."""
        table = await self.get()
        handles = [self.engine] + [self.engine.options(multiplexed_model_id=name)
                                   for name in table.models]
        found: dict[str, ReplicaModels] = {}
        answers = await asyncio.gather(*(asyncio.wait_for(h.models.remote(), timeout_s)
                                         for h in handles), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, ReplicaModels):
                found[answer.replica_id] = answer
        return found


@dataclass
class StorageHealth:
    """Whether the object store answers, from one ``ping`` per ``ttl_s`` at most (shared by
    every request of the replica), so accepting work can refuse at once while S3 is down."""

    objects: Any  # ObjectStore
    ttl_s: float = STORAGE_HEALTH_TTL_S
    _error: MusicfnError | None = None
    _at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, *, fresh: bool = False) -> MusicfnError | None:
        """The store's error (None when it answers), pinged again when older than ``ttl_s``
        (or ``fresh``)."""
        async with self._lock:  # one ping in flight; the others wait for its answer
            if fresh or time.monotonic() - self._at > self.ttl_s:
                try:
                    await asyncio.to_thread(self.objects.ping)
                    self._error = None
                except MusicfnError as exc:
                    self._error = exc
                self._at = time.monotonic()
            return self._error

    async def require(self) -> None:
        """Raise StorageUnreachableError (503 + Retry-After) while the store does not answer."""
        error = await self.check()
        if error is not None:
            raise StorageUnreachableError(f"object storage is unavailable ({error.code}); "
                                          "nothing was accepted, retry later",
                                          code="storage_unreachable")


@dataclass
class Services:
    """Everything the routes of one ingress replica use."""

    settings: Settings
    objects: ObjectStore
    tracks: TrackStore
    catalogue: CatalogueClient
    queue: JobQueue
    engine: Any  # DeploymentHandle of MusicGen
    runner: Any  # DeploymentHandle of JobRunner (nudged after accepting work)
    poller: Any  # DeploymentHandle of EventPoller, or None
    limits: LiveLimits
    watcher: StatusWatcher
    default_model: str  # the model requests without one run on (until the engine answers)
    storage: StorageHealth = field(init=False)
    finals: FinalRecords = field(default_factory=FinalRecords)  # final records' JSON, cached
    models: LiveModels = field(init=False)  # the models requests may name
    _nudges: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.storage = StorageHealth(self.objects)
        self.models = LiveModels(self.engine, self.default_model)

    @property
    def engine_name(self) -> str:
        """The engine this deployment runs."""
        return engine_of(self.default_model)

    def nudge_runners(self) -> None:
        """Tell a runner that work is waiting (best effort: runners also poll). One nudge in
        flight is enough: the runner leases everything waiting when it wakes."""
        if self._nudges:
            return
        task = asyncio.create_task(self._nudge())
        self._nudges.add(task)
        task.add_done_callback(self._nudges.discard)

    async def _nudge(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.nudge.remote(), 2.0)

    async def view(self, track_id: str) -> JobView:
        """A track and its job; NotFoundError (404) for an unknown or malformed id."""
        try:
            validate_id(track_id)
        except MusicfnError:
            raise NotFoundError(f"no generation {track_id!r}") from None
        found: JobView | None = await self.catalogue.view(track_id)
        if found is None:
            raise NotFoundError(f"no generation {track_id}")
        return found


_installed: list[Services] = []


def set_services(services: Services) -> None:
    """Install this process's services (the ingress constructor; tests)."""
    _installed[:] = [services]


def get_services() -> Services:
    """This process's services; ConfigurationError before the ingress installed them."""
    if not _installed:
        raise ConfigurationError("the ingress has not started yet")
    return _installed[0]


async def services_dependency() -> Services:
    """``get_services`` as a FastAPI dependency. Async on purpose: FastAPI runs a plain
    ``def`` dependency on its thread pool, a thread hop per request (a third of a status
    read's CPU in the ingress, profiled)."""
    return get_services()


ServicesDep = Annotated[Services, Depends(services_dependency)]
