"""Attaching a process to a running Ray cluster the way musicfn's CLI needs: the address
checked first (Ray retries an unreachable one for a long time), loopback kept as loopback,
and Ray's token auth switched on when the cluster requires it."""

from __future__ import annotations

import logging

from musicfn.errors import ConfigurationError

log = logging.getLogger(__name__)


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
