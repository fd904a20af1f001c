"""The catalogue owner as a named Ray actor, so every process goes through one connection.

The actor restarts after a crash (``max_restarts=-1``) and re-opens the same DuckDB file;
writes are idempotent upserts, so calls interrupted by a crash are retried
(``max_task_retries``) without creating duplicates. It is a ``CatalogueOwner``: given the
service's settings it re-creates a deleted file and refills it from the bucket
(``storage.catalogue_owner``).

Other processes (the CLI while the service runs) reach it with ``connect_owner``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musicfn.errors import CatalogueError, ConfigurationError
from musicfn.settings import Settings
from storage.catalogue_owner import ACCEPT_GROUP, accepting_owner_class
from storage.catalogue_queries import TrackPage, TrackQuery

log = logging.getLogger(__name__)

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

    Call methods of ``storage.catalogue_owner.CatalogueOwner`` on it with ``.remote(...)``.
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
    """Synchronous calls on a running owner actor, for processes outside the service."""

    def __init__(self, handle: Any, *, timeout_s: float = 120.0,
                 shutdown_ray: bool = False) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self._shutdown_ray = shutdown_ray

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` on the owner, waited for."""
        import ray

        return ray.get(getattr(self.handle, method).remote(*args, **kwargs),
                       timeout=self.timeout_s)

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks (``Catalogue.list_tracks``) from the owner."""
        page: TrackPage = self.call("list_tracks", query)
        return page

    def stale_jobs(self, older_than_s: float) -> list[Any]:
        """Unfinished jobs no runner takes care of (``JobCatalogue.stale_jobs``)."""
        jobs: list[Any] = self.call("stale_jobs", older_than_s)
        return jobs

    def close(self) -> None:
        """Disconnect from Ray if ``connect_owner`` connected for this client."""
        if self._shutdown_ray:
            import ray

            ray.shutdown()


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


def reachable_ray_address(address: str | None, timeout_s: float = 2.0) -> str:
    """``address`` (default: RAY_ADDRESS, else the running local cluster) as host:port,
    after checking that its GCS port accepts connections (ConnectionError otherwise) and
    that the cluster accepts this process's credentials.

    A cluster on loopback (``musicfn run``: its GCS listens on 127.0.0.1 only) is attached
    on loopback: Ray would otherwise swap 127.0.0.1 for the host's outward IP.

    Ray 2.60 turns token auth on only for a cluster it finds itself, never for an explicit
    address, and then retries a refused token for tens of seconds. So when the GCS refuses
    a call without a token, this switches ``RAY_AUTH_MODE=token`` on for the attach (if the
    mode is unset and a token is here: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``), and raises ConfigurationError ``ray_auth_failed`` at once when
    no token is here or the cluster refuses it.
    """
    import ipaddress
    import socket

    from ray._private.services import get_ray_address_from_environment

    found = get_ray_address_from_environment(address or "auto", None)
    host, _, port = str(found or "").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or found in ("auto", "local"):
        raise ConnectionError(f"no running Ray cluster found (address {found!r})")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        keep_ray_on_loopback()
    with socket.create_connection((host, int(port)), timeout=timeout_s):
        pass
    resolved = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _use_ray_token_auth(resolved, timeout_s)
    return resolved


RAY_MULTI_HOST_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> bool:
    """Switch Ray's multi-host mode off for this process and the processes it starts,
    unless the environment sets it: Ray then takes 127.0.0.1 as this node's address (the
    mode macOS and Windows run in) instead of turning it into the host's outward IP. True
    when it is off."""
    import os

    os.environ.setdefault(RAY_MULTI_HOST_ENV, "0")
    if os.environ[RAY_MULTI_HOST_ENV].strip().lower() not in ("0", "false"):
        return False
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray reads the variable once, on import
    return True


RAY_AUTH_FAILED = "ray_auth_failed"
_RAY_AUTH_HELP = ("use the token of the cluster's head node (its ~/.ray/auth_token): copy it "
                  "to ~/.ray/auth_token here, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")


def _use_ray_token_auth(address: str, timeout_s: float) -> None:
    """Token auth for attaching to ``address``, as ``reachable_ray_address`` describes."""
    import os

    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    if not _gcs_refuses(address, {}, timeout_s):
        return  # the cluster runs without token auth
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        raise ConfigurationError(f"the Ray cluster at {address} requires token auth but "
                                 f"RAY_AUTH_MODE={mode} here: unset RAY_AUTH_MODE (musicfn "
                                 "then uses the token) or set it to token",
                                 code=RAY_AUTH_FAILED)
    header: dict[str, str] = AuthenticationTokenLoader.instance().get_token_for_http_header(
        ignore_auth_mode=True)
    if not header:
        raise ConfigurationError(f"the Ray cluster at {address} requires an auth token and "
                                 f"none was found: {_RAY_AUTH_HELP}", code=RAY_AUTH_FAILED)
    if _gcs_refuses(address, header, timeout_s):
        source = ("RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else
                  os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token")
        raise ConfigurationError(f"the Ray cluster at {address} refused the auth token from "
                                 f"{source} (InvalidAuthToken): {_RAY_AUTH_HELP}",
                                 code=RAY_AUTH_FAILED)
    if mode is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray caches its config: make this process see token mode


def _gcs_refuses(address: str, header: dict[str, str], timeout_s: float) -> bool:
    """True when the GCS at ``address`` answers a call carrying ``header`` with
    UNAUTHENTICATED; ConnectionError when it does not answer at all."""
    import grpc  # type: ignore[import-untyped]  # grpcio, a dependency of Ray
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=timeout_s,
                              metadata=tuple(header.items()))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
            raise ConnectionError(f"the Ray GCS at {address} did not answer: "
                                  f"{exc.code().name} {exc.details()}") from None
    return False
