"""The pieces of ``musicfn run`` that start and stop the service on this machine: the
embedded S3, the local Ray cluster, the catalogue owner (early), the readiness wait."""

from __future__ import annotations

import contextlib
import logging
import time

import httpx

from musicfn.errors import ConfigurationError
from musicfn.settings import Settings
from storage.backends import start_object_store
from storage.embedded_s3 import EmbeddedS3


def start_s3(settings: Settings, started: list[EmbeddedS3]) -> None:
    """Start (or reuse) the embedded S3 when no endpoint is configured; ensure the bucket.
    An embedded server this process started is appended to ``started`` (stopped at exit)."""
    _, embedded = start_object_store(settings)
    if embedded is None:
        print(f"S3: {settings.endpoint_url}")
        return
    started.append(embedded)
    state = "reused" if embedded.reused else "started"
    print(f"embedded S3 {state}: {embedded.endpoint_url} (data: {embedded.data_dir}); "
          "restarted if it dies")


def start_ray(settings: Settings) -> float:
    """Start a local Ray cluster on loopback; its GPU count."""
    import ray

    from musicfn.priority import ray_worker_niceness_env
    from musicfn_cli.commands.ray_session import loopback_ray_options

    ray_worker_niceness_env()
    # Worker logs stay in Ray's session directory (/tmp/ray/session_latest/logs), not here.
    ray.init(address="local", namespace=settings.ray_namespace, include_dashboard=False,
             logging_level=logging.WARNING, configure_logging=True, log_to_driver=False,
             **loopback_ray_options())  # Ray's listeners on 127.0.0.1 where Ray allows it
    return float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]


def start_catalogue_owner(settings: Settings) -> None:
    """Create the catalogue owner actor now, as the replicas would (same name, namespace and
    arguments: they find it, ``get_if_exists``), so its process starts while Serve does
    instead of after the replicas' imports; wait until it is up (at most 120 s)."""
    import ray

    from storage.catalogue.actor import catalogue_actor

    owner = catalogue_actor(settings.catalogue_file, detached=True,
                            checkpoint_mb=settings.catalogue_checkpoint_mb,
                            namespace=settings.ray_namespace, settings=settings)
    with contextlib.suppress(Exception):  # a failing owner shows in the deployments' health
        ray.get(owner.__ray_ready__.remote(), timeout=120)


def wait_healthy(base: str, settings: Settings, timeout_s: float = 120.0) -> None:
    """Poll ``/healthz`` until it answers 200 (every dependency up)."""
    headers = auth_headers(settings)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = client.get("/healthz", headers=headers)
                if r.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ConfigurationError(f"{base}/healthz not 200 after {timeout_s:.0f} s")
            time.sleep(0.1)


def auth_headers(settings: Settings) -> dict[str, str]:
    """The API key header for requests to the service (none when no key is configured)."""
    if settings.api_key is None:
        return {}
    return {"x-api-key": settings.api_key.get_secret_value()}


def stop_service() -> None:
    """Shut Serve and the local Ray cluster down (nothing when Ray never started)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return  # Ray never started (an earlier step failed)
    with contextlib.suppress(Exception):
        serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()
