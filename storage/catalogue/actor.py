"""The catalogue owner as a named Ray actor, so every process goes through one connection.

The actor restarts after a crash (``max_restarts=-1``) and re-opens the same DuckDB file;
writes are idempotent upserts, so calls interrupted by a crash are retried
(``max_task_retries``) without creating duplicates. It is a ``CatalogueOwner``: given the
service's settings it re-creates a deleted file and refills it from the bucket
(``storage.catalogue.owner``).

Other processes (the CLI while the service runs) reach it with ``connect_owner``; the
service wraps the handle in ``storage.catalogue.client.CatalogueClient`` (``catalogue_client``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from musicfn.errors import CatalogueError, ConfigurationError
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.catalogue.owner import ACCEPT_GROUP, accepting_owner_class
from storage.ray_attach import RAY_AUTH_FAILED, reachable_ray_address

log = logging.getLogger(__name__)
T = TypeVar("T")

CATALOGUE_ACTOR_PREFIX = "musicfn-catalogue"


def owner_name(path: Path | str) -> str:
    """The actor name of the owner of one catalogue file: one owner per file, so services
    with different catalogues never share an owner."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return f"{CATALOGUE_ACTOR_PREFIX}-{digest}"


def catalogue_actor(path: Path | str, *, checkpoint_mb: int = 256,
                    name: str | None = None,
                    namespace: str | None = None, detached: bool = False,
                    max_task_retries: int = 3, settings: Settings | None = None,
                    watch_interval_s: float | None = None,
                    resources: Mapping[str, float] | None = None) -> Any:
    """The handle of the catalogue owner actor, created on first use (``get_if_exists``).

    Call methods of ``storage.catalogue.owner.CatalogueOwner`` on it with ``.remote(...)``.
    With ``detached`` the actor outlives the driver that created it (what a service wants).
    ``settings`` (S3 endpoint, bucket, prefixes) let the owner rebuild a lost file from the
    sidecars in the bucket; the first creator's arguments are the ones that count.
    ``resources`` are custom Ray resources the owner needs, e.g. ``{"head": 0.01}`` on a
    cluster whose head node alone has a ``head`` resource: the owner (and every restart of
    it) then lands on the node that holds the DuckDB file (docs/multinode.md).
    """
    import ray

    options: dict[str, Any] = {
        "name": name or owner_name(path),
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": max_task_retries,
        "num_cpus": 0,  # I/O bound; never hold a CPU slot the audio work needs
    }
    if namespace is not None:
        options["namespace"] = namespace
    if detached:
        options["lifetime"] = "detached"
    wanted = resources if resources is not None else (
        settings.catalogue_resources if settings is not None else None)
    if wanted:
        options["resources"] = dict(wanted)
    remote: Any = ray.remote  # its stubs do not list concurrency_groups
    actor_cls = remote(concurrency_groups={ACCEPT_GROUP: 1})(accepting_owner_class())
    return actor_cls.options(**options).remote(str(path), checkpoint_mb=checkpoint_mb,
                                               settings=settings,
                                               watch_interval_s=watch_interval_s or (
                                                   settings.catalogue_watch_interval_s
                                                   if settings else 1.0))


class OwnerClient:
    """The owner's operations, run to the end from synchronous code (the CLI):
    ``owner.run(owner.catalogue.list_tracks(query))``."""

    def __init__(self, handle: Any, *, timeout_s: float = 120.0,
                 shutdown_ray: bool = False) -> None:
        self.catalogue = CatalogueClient(handle)
        self.timeout_s = timeout_s
        self._shutdown_ray = shutdown_ray

    @property
    def handle(self) -> Any:
        """The owner's ActorHandle."""
        return self.catalogue.handle

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        """Wait for one call on the owner (at most ``timeout_s``)."""
        return asyncio.run(asyncio.wait_for(call, self.timeout_s))

    def close(self) -> None:
        """Disconnect from Ray if ``connect_owner`` connected for this client."""
        if self._shutdown_ray:
            import ray

            ray.shutdown()


def catalogue_client(path: Path | str, **options: Any) -> CatalogueClient:
    """``catalogue_actor(path, **options)`` behind the typed client."""
    return CatalogueClient(catalogue_actor(path, **options))


def find_owner(path: Path | str, namespace: str | None = None) -> Any | None:
    """The handle of the owner of ``path`` in the connected Ray cluster: in ``namespace``
    when it is there, else in any namespace."""
    import ray

    name = owner_name(path)
    found = [e["namespace"] for e in ray.util.list_named_actors(all_namespaces=True)
             if e["name"] == name]
    for ns in sorted(found, key=lambda n: n != namespace):
        try:
            return ray.get_actor(name, namespace=ns)
        except ValueError:  # gone since it was listed
            continue
    return None


def connect_owner(path: Path | str, *, address: str | None = None, required: bool = False,
                  namespace: str | None = None) -> OwnerClient | None:
    """A client of the running owner of ``path``, or None when none is reachable.

    Connects to the Ray cluster at ``address`` (default: a local cluster, if one runs)
    unless this process is connected already. With ``required``, raises CatalogueError
    instead of returning None. A cluster that refuses this process's token auth raises
    ConfigurationError ``ray_auth_failed`` either way (``reachable_ray_address``).
    """
    import ray
    from ray.exceptions import AuthenticationError

    connected_here = False
    if not ray.is_initialized():
        try:
            # Ray itself retries an unreachable address (or a refused token) for a long
            # time: check both first.
            resolved = reachable_ray_address(address)
            ray.init(address=resolved, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=False)
            connected_here = True
        except AuthenticationError as exc:
            raise ConfigurationError(f"Ray refused this process's auth token: {exc.message}",
                                     code=RAY_AUTH_FAILED) from None
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            if required:
                raise CatalogueError(f"no Ray cluster reachable at {address or 'auto'}: "
                                     f"{exc}", code="catalogue_owner_unreachable") from None
            log.info("no Ray cluster reachable (%s): opening the catalogue file", exc)
            return None
    handle = find_owner(path, namespace)
    if handle is None:
        if connected_here:
            ray.shutdown()
        if required:
            raise CatalogueError(f"no catalogue owner for {Path(path).resolve()} in the Ray "
                                 "cluster", code="catalogue_owner_unreachable")
        return None
    return OwnerClient(handle, shutdown_ray=connected_here)
