"""``musicfn doctor``: the security posture of a configuration, checked before it runs.

Each check gives a ``Finding``: ``ok``, ``warn`` (worth knowing, not dangerous by itself) or
``danger`` (a combination that exposes something; the command exits non-zero). The inputs are
the settings (environment), optionally a Serve config file (``serve_config.yaml``) and the
environment variables Ray reads itself (``RAY_AUTH_MODE``, ``RAY_SERVE_DEFAULT_HTTP_HOST``).
Nothing is contacted. Besides configuration, the ``listener`` checks read ``/proc``: every TCP
socket the running service listens on (its processes: the tree of the process holding the
catalogue file, i.e. ``musicfn run`` with Ray's GCS, raylet, agents and workers, plus the
embedded S3), each with its address; one on a non-loopback address is a warning unless it
is a host configured on purpose (Serve's HTTP host, the dashboard host).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from pydantic import ValidationError

from musicfn.settings import EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, Settings

Severity = Literal["ok", "warn", "danger"]
MAX_PRESIGN_S = 3600  # storage.objects.MAX_PRESIGN_EXPIRY_S
LONG_PRESIGN_S = 900
MIN_SECRET_CHARS = 16
_SECRET_NAME = re.compile(r"(api_key|access_key|secret|token|password|passwd|credential)", re.I)


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    check: str
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return asdict(self)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and anything else."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name.split("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip).is_loopback
    except ValueError:
        try:  # a host name: loopback only if every address it resolves to is
            infos = socket.getaddrinfo(name, None)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def serve_host(config: Mapping[str, Any] | None, env: Mapping[str, str]) -> str | None:
    """The host the Serve proxy binds for ``config`` (None without a config file).

    Ray Serve 2.60 defaults to localhost, unless ``RAY_SERVE_DEFAULT_HTTP_HOST`` says
    otherwise or the HAProxy mode forces all interfaces.
    """
    if config is None:
        return None
    host = (config.get("http_options") or {}).get("host")
    if host:
        return str(host)
    if env.get("RAY_SERVE_ENABLE_HA_PROXY", "0") in ("1", "true", "True"):
        return "0.0.0.0"  # noqa: S104 - describing Ray's behaviour, not binding
    return env.get("RAY_SERVE_DEFAULT_HTTP_HOST") or "127.0.0.1"


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def check_bindings(settings: Settings, config: Mapping[str, Any] | None,
                   dashboard_host: str, env: Mapping[str, str]) -> Iterator[Finding]:
    """Serve and the dashboard on loopback, or guarded when they are not."""
    hosts = {"MUSICFN_HTTP_HOST (musicfn run)": settings.http_host}
    from_config = serve_host(config, env)
    if from_config is not None:
        hosts["http_options.host (serve config)"] = from_config
    exposed = [f"{where} = {host}" for where, host in hosts.items() if not is_loopback(host)]
    if not exposed:
        yield Finding("serve_bind", "ok", "Serve binds to loopback only")
    else:
        key = _secret(settings.api_key)
        if key is None:
            yield Finding("serve_bind", "danger", f"Serve is reachable from other hosts "
                          f"({'; '.join(exposed)}) and MUSICFN_API_KEY is not set")
        elif len(key) < MIN_SECRET_CHARS:
            yield Finding("serve_bind", "danger", f"Serve is exposed ({'; '.join(exposed)}) "
                          f"and MUSICFN_API_KEY is shorter than {MIN_SECRET_CHARS} chars")
        else:
            yield Finding("serve_bind", "warn", f"Serve is exposed ({'; '.join(exposed)}); "
                          "every route but /healthz needs the API key; put TLS in front")
        if settings.webhook_token is None:
            yield Finding("webhook_token", "danger", "Serve is exposed and "
                          "MUSICFN_WEBHOOK_TOKEN is not set: anyone can post bucket events")
        elif len(_secret(settings.webhook_token) or "") < MIN_SECRET_CHARS:
            yield Finding("webhook_token", "danger", "Serve is exposed and "
                          f"MUSICFN_WEBHOOK_TOKEN is shorter than {MIN_SECRET_CHARS} chars")
        else:
            yield Finding("webhook_token", "ok", "webhook events need the bearer token")
        if settings.callback_allow_private:
            yield Finding("callback_private", "danger", "Serve is exposed and "
                          "MUSICFN_CALLBACK_ALLOW_PRIVATE=true: callers can make the service "
                          "POST to internal addresses (SSRF)")
    auth = env.get("RAY_AUTH_MODE", "").lower()
    if is_loopback(dashboard_host):
        yield Finding("dashboard_bind", "ok", f"Ray dashboard on {dashboard_host} (loopback; "
                      "reach it remotely with ssh -L 8265:127.0.0.1:8265)")
    elif auth == "disabled":
        yield Finding("dashboard_bind", "danger", f"Ray dashboard on {dashboard_host} with "
                      "RAY_AUTH_MODE=disabled: anyone who reaches it can run code on the "
                      "cluster")
    else:
        yield Finding("dashboard_bind", "warn", f"Ray dashboard on {dashboard_host}: token "
                      "auth guards it (Ray's default); an SSH tunnel to 127.0.0.1 is safer")


def check_presign(settings: Settings) -> Iterator[Finding]:
    """Presigned URLs: GET only, short-lived (checked on a real, offline-signed URL)."""
    from storage.objects import ObjectStore

    url = ObjectStore(settings).presign_get("doctor/probe.wav")
    query = parse_qs(urlparse(url).query)
    expires = int(query.get("X-Amz-Expires", ["0"])[0])
    if expires > MAX_PRESIGN_S or expires <= 0:
        yield Finding("presign", "danger", f"presigned URLs live {expires} s "
                      f"(at most {MAX_PRESIGN_S} s)")
    elif expires > LONG_PRESIGN_S:
        yield Finding("presign", "warn", f"presigned GET URLs live {expires} s; "
                      f"anyone holding one can download until then")
    else:
        yield Finding("presign", "ok", f"presigned URLs are GET-only (SigV4 signs the "
                      f"method) and expire after {expires} s")


def check_s3(settings: Settings, service_exposed: bool) -> Iterator[Finding]:
    """No default credentials where S3 is reachable; TLS to remote endpoints."""
    defaults = settings.access_key == EMBEDDED_ACCESS_KEY or \
        settings.secret_key == EMBEDDED_SECRET_KEY
    host = urlparse(settings.endpoint_url).hostname or ""
    if defaults and not is_loopback(host):
        yield Finding("s3_credentials", "danger", f"S3 at {settings.endpoint_url} uses "
                      "musicfn's built-in embedded credentials; set MUSICFN_S3_ACCESS_KEY / "
                      "MUSICFN_S3_SECRET_KEY")
    elif settings.uses_embedded_s3:
        note = "; remote clients cannot fetch presigned audio URLs that point there" \
            if service_exposed else ""
        yield Finding("s3_credentials", "warn" if service_exposed else "ok",
                      f"embedded S3 on {settings.endpoint_url} (loopback only){note}")
    else:
        yield Finding("s3_credentials", "ok", f"S3 at {settings.endpoint_url} with "
                      "configured credentials")
    if not is_loopback(host) and urlparse(settings.endpoint_url).scheme == "http":
        yield Finding("s3_tls", "warn", f"S3 endpoint {settings.endpoint_url} is plain HTTP "
                      "off this host: credentials' signatures and audio travel unencrypted")


def _secret_paths(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if _SECRET_NAME.search(str(key)) and isinstance(value, str | int) and value != "":
                yield here
            else:
                yield from _secret_paths(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _secret_paths(item, f"{path}[{i}]")


def check_config_secrets(config: Mapping[str, Any] | None) -> Iterator[Finding]:
    """Secrets belong in the environment, never in the Serve config file."""
    if config is None:
        return
    found = list(_secret_paths(config))
    if found:
        yield Finding("config_secrets", "danger", "secret values in the serve config: "
                      f"{', '.join(found)} (use the environment)")
    else:
        yield Finding("config_secrets", "ok", "no secret values in the serve config")


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket and the process holding it."""

    host: str
    port: int
    pid: int
    process: str

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_listeners(listeners: list[Listener], settings: Settings,
                    config: Mapping[str, Any] | None, dashboard_host: str,
                    env: Mapping[str, str]) -> Iterator[Finding]:
    """Each listening socket of the service with its address; off loopback is a warning
    unless it is a host configured on purpose."""
    purposes: dict[int, str] = {}
    if not is_loopback(settings.http_host):
        purposes[settings.http_port] = f"MUSICFN_HTTP_HOST={settings.http_host}"
    host = serve_host(config, env)
    if config is not None and host is not None and not is_loopback(host):
        port = int((config.get("http_options") or {}).get("port") or 8000)
        purposes[port] = f"http_options.host={host}"
    if not is_loopback(dashboard_host):
        purposes[8265] = f"dashboard host {dashboard_host}"
    if not listeners:
        yield Finding("listener", "ok", "no listening socket of a running service found "
                      f"(no process holds {settings.catalogue_file})")
    for item in listeners:
        where = f"{item.process} (pid {item.pid}) listens on {item.address}"
        if is_loopback(item.host):
            yield Finding("listener", "ok", where)
        elif item.port in purposes:
            yield Finding("listener", "ok", f"{where} (configured: {purposes[item.port]})")
        else:
            why = " (Ray Serve 2.60 binds each replica's gRPC server to all interfaces; " \
                "token auth guards it: firewall the port)" \
                if item.process.startswith("ray::Serve") else ""
            yield Finding("listener", "warn", f"{where}: reachable from other hosts{why}")


def run_checks(settings: Settings, config: Mapping[str, Any] | None = None, *,
               dashboard_host: str = "127.0.0.1", env: Mapping[str, str] | None = None,
               listeners: list[Listener] | None = None) -> list[Finding]:
    """Every check for ``settings`` (+ the parsed serve ``config``, + the service's
    ``listeners`` when given), in a stable order."""
    env = os.environ if env is None else env
    findings = list(check_bindings(settings, config, dashboard_host, env))
    exposed = any(f.check == "serve_bind" and f.severity != "ok" for f in findings)
    findings += check_presign(settings)
    findings += check_s3(settings, exposed)
    findings += check_config_secrets(config)
    if listeners is not None:
        findings += check_listeners(listeners, settings, config, dashboard_host, env)
    return findings


def load_settings() -> tuple[Settings | None, list[Finding]]:
    """Settings from the environment, or a danger finding per invalid value."""
    try:
        return Settings(), []
    except ValidationError as exc:
        return None, [Finding("settings", "danger",
                              f"MUSICFN_{'_'.join(str(p) for p in e['loc']).upper()}: "
                              f"{e['msg']}") for e in exc.errors()]
