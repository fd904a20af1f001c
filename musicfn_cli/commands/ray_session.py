"""Attaching a CLI command to Ray: the running musicfn cluster if there is one, else a local
one for the duration of the command.

Which cluster: **the cluster of the service that holds this data dir's catalogue**
(``service_ray_address``: the DuckDB lock names the holder's PID; a Ray worker's raylet names
its cluster's GCS), else ``RAY_ADDRESS``, else the local cluster Ray finds itself. So a
machine running several Ray clusters still attaches to the right one.

Attaching handles Ray's token auth itself (``storage.ray_attach.reachable_ray_address``):
no ``RAY_AUTH_MODE=token`` needs exporting, and a refused or missing token fails at once with
ConfigurationError ``ray_auth_failed`` instead of a local cluster being started.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from musicfn.errors import ConfigurationError
from musicfn.priority import ray_worker_niceness_env
from musicfn.settings import Settings
from storage.catalogue.actor import catalogue_client
from storage.catalogue.client import CatalogueClient
from storage.ray_attach import RAY_AUTH_FAILED, keep_ray_on_loopback, reachable_ray_address


def loopback_ray_options() -> dict[str, Any]:
    """``ray.init`` options for a new cluster on this machine only, listening on loopback
    where Ray 2.60 allows it (none when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` is set).

    With the node address 127.0.0.1 (``storage.ray_attach.keep_ray_on_loopback``) the
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
        # The cluster of the service holding this data dir's catalogue, else RAY_ADDRESS / the
        # local one: an owner created in another cluster could not open the locked file.
        address = reachable_ray_address(service_ray_address(settings.catalogue_file))
    except (ConnectionError, OSError, ValueError):
        ray_worker_niceness_env()
        ray.init(address="local", include_dashboard=False, **loopback_ray_options(), **common)
        return False
    try:
        ray.init(address=address, **common)
    except AuthenticationError as exc:
        raise ConfigurationError(f"Ray refused this process's auth token: {exc.message}",
                                 code=RAY_AUTH_FAILED) from None
    return True


def catalogue(settings: Settings) -> CatalogueClient:
    """The catalogue owner of ``settings``' file (created if the cluster has none)."""
    return catalogue_client(settings.catalogue_file, namespace=settings.ray_namespace,
                            checkpoint_mb=settings.catalogue_checkpoint_mb, detached=False,
                            settings=settings)


_PID_RE = re.compile(r"\bPID (\d+)\b")
_GCS_ARG = "--gcs-address="


def lock_holder_pid(lock_message: str) -> int | None:
    """The PID in DuckDB's "file is locked" message (``CatalogueLockedError``), if named."""
    found = _PID_RE.search(lock_message)
    return int(found[1]) if found else None


def catalogue_holder(path: Path) -> int | None:
    """The PID of the process holding the DuckDB file at ``path``, or None when the file is
    free, missing or its holder unknown. Probes read-only: creates and keeps nothing."""
    import duckdb

    if not path.exists():
        return None
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as exc:
        return lock_holder_pid(str(exc)) if "lock" in str(exc).lower() else None
    return None


def ray_address_of(pid: int) -> str | None:
    """The GCS address of the Ray cluster whose worker ``pid`` is (Linux ``/proc``), or None
    when ``pid`` is not a Ray worker on this machine."""
    proc = Path("/proc")
    try:
        environ = (proc / str(pid) / "environ").read_bytes().split(b"\0")
        raylet = next((v.split(b"=", 1)[1].decode() for v in environ
                       if v.startswith(b"RAY_RAYLET_PID=")), None)
        if raylet is None or not raylet.isdigit():
            return None
        args = (proc / raylet / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # gone, another user's, or no /proc here
        return None
    if not args or not Path(args[0]).name.startswith("raylet"):
        return None
    return next((a[len(_GCS_ARG):] for a in args if a.startswith(_GCS_ARG)), None)


def service_ray_address(catalogue_file: Path) -> str | None:
    """The Ray cluster of the running service holding ``catalogue_file``: None when nothing
    holds it, or its holder is not a Ray worker here."""
    pid = catalogue_holder(catalogue_file)
    return None if pid is None else ray_address_of(pid)
