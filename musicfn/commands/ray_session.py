"""Attaching a CLI command to Ray: the running musicfn cluster if there is one, else a local
one for the duration of the command."""

from __future__ import annotations

import logging
from typing import Any

from musicfn.settings import Settings
from storage.catalogue_actor import catalogue_actor, reachable_ray_address


def connect(settings: Settings) -> bool:
    """Join the cluster at ``RAY_ADDRESS`` / the running local one, else start a local one.

    Returns True when attached to an existing cluster (a running service's owner actor, if
    any, is then used instead of opening the DuckDB file, which it holds).
    """
    import ray

    if ray.is_initialized():
        return True
    common: dict[str, Any] = {"namespace": settings.ray_namespace,
                              "logging_level": logging.ERROR, "log_to_driver": False}
    try:
        address = reachable_ray_address(None)
    except (ConnectionError, OSError, ValueError):
        ray.init(address="local", include_dashboard=False, **common)
        return False
    ray.init(address=address, **common)
    return True


def catalogue(settings: Settings) -> Any:
    """The catalogue owner actor of ``settings``' file (created if the cluster has none)."""
    return catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace,
                           checkpoint_mb=settings.catalogue_checkpoint_mb, detached=False,
                           settings=settings)
