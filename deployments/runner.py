"""The job runners as a Serve deployment: each replica runs ``jobs.runner.Runner``.

Runners pull work from the catalogue (leases), so any replica on any node takes any job, and
a replica's death only delays its jobs until their leases expire. ``nudge`` (called by the
ingress after accepting work) wakes the loop at once. Autoscaling follows the queue depth that
each replica reports (``record_autoscaling_stats``, read by ``deployments.autoscaling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from ray import serve

from functions.tasks import warm_up_workers
from jobs.runner import Runner
from jobs.service import build_runner
from musicfn import metrics
from musicfn.errors import ConfigurationError
from musicfn.logs import configure_json_logging_in_worker
from musicfn.priority import run_process_in_background
from musicfn.settings import Settings, get_settings
from storage.catalogue.actor import catalogue_client

log = logging.getLogger(__name__)
DRAIN_S = 20.0


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
                  graceful_shutdown_timeout_s=30, health_check_period_s=10)
class JobRunner:
    """Leases and runs generation, event and batch jobs until the replica stops."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
            self, engine: Any, settings: dict[str, Any] | None = None) -> None:
        configure_json_logging_in_worker()
        self.settings = Settings(**settings) if settings else get_settings()
        run_process_in_background()  # batch work: the front door on this node goes first
        catalogue = catalogue_client(self.settings.catalogue_file, detached=True,
                                    checkpoint_mb=self.settings.catalogue_checkpoint_mb,
                                    namespace=self.settings.ray_namespace,
                                    settings=self.settings)
        self.runner: Runner = build_runner(self.settings, catalogue, engine)
        self._depth = 0
        self._stop = asyncio.Event()
        self._loop_task = asyncio.create_task(self.runner.run(self._stop))
        self._depth_task = asyncio.create_task(self._watch_depth())
        self._warming: threading.Thread | None = None

    def _warm_up(self) -> None:
        """Start and warm the audio workers once, when the first work shows up (a nudge, or a
        queue depth above 0). Not in the constructor: the worker processes would compete with
        the replicas' imports while the application deploys."""
        if self._warming is None:
            self._warming = threading.Thread(target=warm_up_workers, name="warm-up", daemon=True)
            self._warming.start()

    async def nudge(self) -> None:
        """Work is waiting: lease now."""
        self._warm_up()
        self.runner.nudge()

    async def status(self) -> dict[str, Any]:
        """Holder, running jobs, counters, and the queue depth last seen."""
        return {**self.runner.status(), "queue_depth": self._depth}

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics: the whole queue's depth, and this replica's jobs."""
        return {"queue_depth": float(self._depth), "running": float(len(self.runner.running))}

    async def check_health(self) -> None:
        """Unhealthy (Serve replaces the replica) when the loop has died."""
        if self._loop_task.done():
            raise ConfigurationError("the job runner loop stopped")

    async def _watch_depth(self) -> None:
        queue = self.runner.queue
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self._depth = await queue.depth()
                if self._depth:
                    self._warm_up()
                metrics.set_queue_depth("jobs", self._depth)
            await asyncio.sleep(self.settings.job_poll_interval_s)

    async def __del__(self) -> None:
        """Graceful stop: finish what runs (bounded), hand the rest back to the queue."""
        self._stop.set()
        await self.runner.drain(DRAIN_S)
