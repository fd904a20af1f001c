"""The poller as a Serve deployment: one replica running ``Poller.run`` in the background.

It runs when ``Settings.poller_enabled`` (by default with the embedded S3, which has no bucket
notifications). Serve restarts the replica if the loop dies (``check_health`` fails).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from jobs.service import job_queue
from musicfn.errors import ConfigurationError
from musicfn.settings import Settings, get_settings
from storage.catalogue.actor import catalogue_client
from storage.objects import ObjectStore
from triggers.poller import Poller, PollReport

log = logging.getLogger(__name__)


@serve.deployment(num_replicas=1, max_ongoing_requests=16, health_check_period_s=5,
                  ray_actor_options={"num_cpus": 0})
class EventPoller:
    """Polls incoming/ until the replica stops; ``status`` for operators."""

    def __init__(self, settings: dict[str, Any] | None = None, runners: Any = None) -> None:
        self.settings = Settings(**settings) if settings else get_settings()
        self.last: PollReport | None = None
        self.polls = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        objects = ObjectStore(self.settings)
        catalogue = catalogue_client(self.settings.catalogue_file, detached=True,
                                    checkpoint_mb=self.settings.catalogue_checkpoint_mb,
                                    namespace=self.settings.ray_namespace,
                                    settings=self.settings)
        nudge = (lambda: runners.nudge.remote()) if runners is not None else None
        self.poller = Poller(job_queue(catalogue, self.settings), objects, self.settings,
                             nudge=nudge)
        if self.settings.poller_enabled:
            self._thread = threading.Thread(target=self._main, name="poller", daemon=True)
            self._thread.start()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.poller.run(stop=self._stop, on_report=self._reported)

        asyncio.run(main())

    def _reported(self, report: PollReport) -> None:
        self.last = report
        self.polls += 1

    async def status(self) -> dict[str, Any]:
        """Whether it runs, how many polls it made, and what the last one did."""
        return {"enabled": self.settings.poller_enabled, "polls": self.polls,
                "interval_s": self.settings.poll_interval_s,
                "last": self.last.model_dump(mode="json") if self.last else None}

    def check_health(self) -> None:
        if self._thread is not None and not self._thread.is_alive():
            raise ConfigurationError("the poller loop stopped")

    def __del__(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
