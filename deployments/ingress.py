"""The HTTP ingress on Ray Serve: the composition root of one replica.

It builds the replica's ``Services`` (bucket, catalogue owner, job queue, handles of the engine,
the runners and the poller) and serves ``deployments.api``. It holds no jobs: killing or
scaling it down strands nothing (the work is in the catalogue and the runners).

No ``from __future__ import annotations``: Serve's ingress wrapper resolves annotations.
"""

from typing import Any

from ray import serve

from deployments.api import create_app
from deployments.api.deps import LiveLimits, Services, set_services
from deployments.api.watch import StatusWatcher
from jobs.service import job_queue
from musicfn.settings import Settings, get_settings
from storage.catalogue.actor import catalogue_client
from storage.objects import ObjectStore
from storage.tracks import TrackStore

app = create_app()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200,
                  graceful_shutdown_timeout_s=20)
@serve.ingress(app)
class Ingress:
    """HTTP front of musicfn: validates, accepts jobs into the catalogue, serves it."""

    def __init__(self, engine: Any, runner: Any, default_model: str = "synth",
                 settings: dict[str, Any] | None = None, poller: Any = None) -> None:
        cfg = Settings(**settings) if settings else get_settings()
        objects = ObjectStore(cfg)
        objects.ensure_bucket()
        catalogue = catalogue_client(cfg.catalogue_file, detached=True,
                                    checkpoint_mb=cfg.catalogue_checkpoint_mb,
                                    namespace=cfg.ray_namespace, settings=cfg)
        set_services(Services(
            settings=cfg, objects=objects, tracks=TrackStore(objects, cfg),
            catalogue=catalogue, queue=job_queue(catalogue, cfg), engine=engine,
            runner=runner, poller=poller, limits=LiveLimits(engine),
            watcher=StatusWatcher(catalogue), default_model=default_model))
