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

from deployments.api.watch import StatusWatcher
from engines.requests import Limits
from jobs.queue import JobQueue
from musicfn.errors import ConfigurationError, MusicfnError, NotFoundError
from musicfn.settings import Settings
from storage.jobs_schema import JobView
from storage.keys import validate_id
from storage.objects import ObjectStore
from storage.tracks import TrackStore

log = logging.getLogger(__name__)
LIMITS_TTL_S = 5.0


@dataclass
class LiveLimits:
    """The MusicGen deployment's live ``user_config.limits`` (their one owner), cached for a
    few seconds; the last known values (or the defaults) while the engine is unreachable."""

    engine: Any
    ttl_s: float = LIMITS_TTL_S
    _value: Limits = field(default_factory=Limits)
    _at: float = float("-inf")

    async def get(self) -> Limits:
        """The current limits."""
        if time.monotonic() - self._at > self.ttl_s:
            with contextlib.suppress(Exception):  # keep the last known limits
                self._value = await asyncio.wait_for(self.engine.limits.remote(), 2.0)
            self._at = time.monotonic()
        return self._value


@dataclass
class Services:
    """Everything the routes of one ingress replica use."""

    settings: Settings
    objects: ObjectStore
    tracks: TrackStore
    catalogue: Any  # ActorHandle of the catalogue owner
    queue: JobQueue
    engine: Any  # DeploymentHandle of MusicGen
    runner: Any  # DeploymentHandle of JobRunner (nudged after accepting work)
    poller: Any  # DeploymentHandle of EventPoller, or None
    limits: LiveLimits
    watcher: StatusWatcher
    default_model: str
    _nudges: set[asyncio.Task[None]] = field(default_factory=set)

    def nudge_runners(self) -> None:
        """Tell a runner that work is waiting (best effort: runners also poll)."""
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
        found: JobView | None = await self.catalogue.view.remote(track_id)
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


ServicesDep = Annotated[Services, Depends(get_services)]
