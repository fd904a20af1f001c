"""Attaching a CLI command to Ray: the running musicfn cluster if there is one, else a local
one for the duration of the command.

Attaching handles Ray's token auth itself (``storage.catalogue_actor.reachable_ray_address``):
no ``RAY_AUTH_MODE=token`` needs exporting, and a refused or missing token fails at once with
ConfigurationError ``ray_auth_failed`` instead of a local cluster being started.
"""

from __future__ import annotations

import logging
from typing import Any

from musicfn.errors import ConfigurationError
from musicfn.settings import Settings
from storage.catalogue_actor import (
    RAY_AUTH_FAILED,
    catalogue_actor,
    keep_ray_on_loopback,
    reachable_ray_address,
)


def loopback_ray_options() -> dict[str, Any]:
    """``ray.init`` options for a new cluster on this machine only, listening on loopback
    where Ray 2.60 allows it (none when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` is set).

    With the node address 127.0.0.1 (``storage.catalogue_actor.keep_ray_on_loopback``) the
    GCS, raylet, workers' gRPC servers, the dashboard agent (HTTP, gRPC, Prometheus export),
    the runtime-env agent and the dashboard head's and autoscaler's metrics servers bind
    127.0.0.1. Ray Serve's per-replica gRPC server binds ``[::]`` whatever the options
    (token auth guards it; ``musicfn doctor`` lists every listener).
    """
    if not keep_ray_on_loopback():
        return {}
    return {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}


def connect(settings: Settings) -> bool:
    """Join the cluster at ``RAY_ADDRESS`` / the running local one, else start a local one.

    Returns True when attached to an existing cluster (a running service's owner actor, if
    any, is then used instead of opening the DuckDB file, which it holds).
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return True
    common: dict[str, Any] = {"namespace": settings.ray_namespace,
                              "logging_level": logging.ERROR, "log_to_driver": False}
    try:
        address = reachable_ray_address(None)
    except (ConnectionError, OSError, ValueError):
        ray.init(address="local", include_dashboard=False, **loopback_ray_options(), **common)
        return False
    try:
        ray.init(address=address, **common)
    except AuthenticationError as exc:
        raise ConfigurationError(f"Ray refused this process's auth token: {exc.message}",
                                 code=RAY_AUTH_FAILED) from None
    return True


def catalogue(settings: Settings) -> Any:
    """The catalogue owner actor of ``settings``' file (created if the cluster has none)."""
    return catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace,
                           checkpoint_mb=settings.catalogue_checkpoint_mb, detached=False,
                           settings=settings)
