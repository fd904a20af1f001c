"""Completion callbacks: POST the finished record to a client URL, safely.

Targets are checked against SSRF before every attempt: the host is resolved and every address
must be public (no loopback, private, link-local, multicast, reserved or unspecified ranges)
unless settings allow private targets; link-local addresses (cloud metadata services such as
169.254.169.254) are refused even then. For plain http the connection then goes to the checked
address, so a DNS answer cannot change between check and request; for https the TLS client
resolves the name again (certificate validation needs it), which leaves a short rebinding
window that a network egress policy should close.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from musicfn.errors import InvalidRequestError

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048


def validate_callback_url(url: str, *, allow_private: bool = False) -> str:
    """Check the shape of a callback URL (http/https, host, no credentials) and, unless
    ``allow_private``, that a literal IP host is public. Returns the URL."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"callback_url longer than {MAX_URL_LENGTH} characters",
                                  code="invalid_callback_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("callback_url must be an http(s) URL with a host",
                                  code="invalid_callback_url")
    if parts.username or parts.password:
        raise InvalidRequestError("callback_url must not contain credentials",
                                  code="invalid_callback_url")
    try:
        _ = parts.port
    except ValueError:
        raise InvalidRequestError("callback_url has an invalid port",
                                  code="invalid_callback_url") from None
    try:
        ip = ipaddress.ip_address(parts.hostname)
    except ValueError:
        host = parts.hostname.lower()
        if not allow_private and (host in ("localhost", "localhost.localdomain")
                                  or host.endswith(".localhost")):
            raise _private(parts.hostname) from None
    else:
        if not _allowed(ip, allow_private):
            raise _private(parts.hostname)
    return url


def _private(host: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"callback_url host {host} is loopback, private or link-local; refused (SSRF guard; "
        "set MUSICFN_CALLBACK_ALLOW_PRIVATE=true to allow)", code="callback_url_not_allowed")


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Public addresses always; loopback/private ones only when allowed; link-local
    (metadata services), multicast, reserved and unspecified never."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    return allow_private or not (ip.is_private or ip.is_loopback)


async def resolve_checked(url: str, *, allow_private: bool) -> str:
    """Resolve the URL's host and return one address allowed by the SSRF policy."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidRequestError(f"callback host {host} does not resolve: {exc}",
                                  code="invalid_callback_url") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not all(_allowed(a, allow_private) for a in addresses):
        raise _private(host)
    return str(addresses[0])


async def post_callback(url: str, payload: dict[str, Any], *, allow_private: bool,
                        timeout_s: float = 10.0, attempts: int = 4,
                        backoff_s: float = 0.5) -> bool:
    """POST ``payload`` as JSON, retrying connection errors and 5xx/429 with backoff.

    Returns True once a 2xx arrives, False when attempts are exhausted or the target refuses
    with another 4xx (logged, never raised: a client's broken webhook must not fail a job).
    """
    for attempt in range(1, attempts + 1):
        try:
            address = await resolve_checked(url, allow_private=allow_private)
            parts = urlsplit(url)
            # Connect to the checked address; keep the original Host header (and SNI) for the
            # target's virtual hosting.
            netloc_ip = f"[{address}]" if ":" in address else address
            target = parts._replace(
                netloc=f"{netloc_ip}:{parts.port}" if parts.port else netloc_ip).geturl()
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                         trust_env=False) as client:
                resp = await client.post(
                    target if parts.scheme == "http" else url, json=payload,
                    headers={"Host": parts.netloc, "User-Agent": "musicfn-callback/1"})
            if resp.is_success:
                return True
            if resp.status_code < 500 and resp.status_code != 429:
                log.warning("callback %s refused with %s; not retrying", url, resp.status_code)
                return False
            log.info("callback %s answered %s (attempt %d)", url, resp.status_code, attempt)
        except InvalidRequestError as exc:
            log.warning("callback %s not sent: %s", url, exc.message)
            return False
        except httpx.HTTPError as exc:
            log.info("callback %s failed (attempt %d): %s", url, attempt, exc)
        if attempt < attempts:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    return False
