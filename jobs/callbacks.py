"""Completion callbacks, as Replicate does them, signed per Standard Webhooks.

A job's callback URL gets an event envelope (``WebhookEvent``: ``type``, ``timestamp``, ``data``
= the record) when the job starts and/or when it reaches a terminal state (``wants``). Each
event has one ``webhook-id`` per (job, event type), the same on every retry, so receivers can
dedupe; each attempt is signed afresh with its own ``webhook-timestamp`` (``jobs.webhook_signing``).

SSRF guard: the host is resolved before every attempt (so a DNS answer that changes between
submission and delivery, i.e. rebinding, is caught) and every address must be globally routable
unless private targets are allowed; link-local and cloud-metadata addresses, multicast,
reserved and unspecified ones are refused even then. The request then goes to the checked
address (with the original Host header, and the original name for TLS SNI and certificate
checks), so the name is not resolved a second time. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import random
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from jobs.webhook_signing import signature_headers, validate_secret
from musicfn.errors import InvalidRequestError, MusicfnError

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
USER_AGENT = "musicfn-webhook/1"

EventType = Literal["generation.started", "generation.completed"]
EventFilter = Literal["start", "completed"]
_FILTER_OF: dict[str, EventFilter] = {"generation.started": "start",
                                      "generation.completed": "completed"}
_NOT_TERMINAL = frozenset({"pending", "processing"})
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # it goes into a header

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Metadata services outside link-local: Alibaba Cloud (inside 100.64/10) and AWS's IPv6 one
# (inside fc00::/7); refused even when private targets are allowed.
_METADATA = (ipaddress.ip_network("100.100.100.200/32"), ipaddress.ip_network("fd00:ec2::254/128"))


def wants(filter: list[EventFilter] | None, event_type: EventType) -> bool:
    """Whether a job whose callback asked for ``filter`` gets ``event_type``.

    None means the default, as Replicate: only ``completed`` (terminal states, including
    failures). An empty list asks for nothing.
    """
    return _FILTER_OF[event_type] in (["completed"] if filter is None else filter)


class WebhookEvent(BaseModel):
    """The envelope POSTed to a callback URL. ``data`` is the job's record; it must hold its
    ``id`` and ``status`` (terminal for ``generation.completed``, else not)."""

    model_config = ConfigDict(frozen=True)

    type: EventType
    timestamp: AwareDatetime
    data: dict[str, Any]

    @model_validator(mode="after")
    def _consistent(self) -> WebhookEvent:
        job_id, status = self.data.get("id"), self.data.get("status")
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise ValueError("data.id must be a job id ([A-Za-z0-9_.-], at most 128)")
        if not isinstance(status, str):
            raise ValueError("data.status must be a string")
        if (status not in _NOT_TERMINAL) != (self.type == "generation.completed"):
            raise ValueError(f"event {self.type} does not fit status {status!r}")
        return self

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, at: datetime | None = None) -> WebhookEvent:
        """The event for a record as it is now: ``generation.started`` while pending or
        processing, else ``generation.completed`` (completed, failed, canceled, ...)."""
        event_type: EventType = ("generation.started" if record.get("status") in _NOT_TERMINAL
                                 else "generation.completed")
        return cls(type=event_type, timestamp=at or datetime.now(UTC), data=dict(record))

    @property
    def webhook_id(self) -> str:
        """``msg_<job id>_<type>``: stable across retries and re-drives of the same job."""
        return f"msg_{self.data['id']}_{self.type}"


class Delivery(BaseModel):
    """What happened to one event's delivery."""

    model_config = ConfigDict(frozen=True)

    event_type: EventType
    webhook_id: str
    status: Literal["delivered", "failed"]
    attempts: int  # requests tried (0 when nothing could be sent)
    http_status: int | None = None  # of the last response, if one arrived
    error: str | None = None  # why the last attempt did not deliver
    delivered_at: datetime | None = None
    signed: bool


class _Refused(Exception):
    """The target is not allowed (SSRF policy) or the URL is unusable: never retried."""


def validate_callback_url(url: str, *, allow_private: bool = False) -> str:
    """Check the shape of a callback URL (http/https, ASCII host, no credentials) and, unless
    ``allow_private``, that a literal IP host is allowed. Returns the URL; raises
    ``InvalidRequestError`` (``invalid_callback_url`` or ``callback_url_not_allowed``)."""
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"callback_url longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("callback_url must be an http(s) URL with a host")
    if not parts.hostname.isascii():
        raise _invalid("callback_url host must be ASCII (use the punycode form)")
    if parts.username or parts.password:
        raise _invalid("callback_url must not contain credentials")
    try:
        _ = parts.port
    except ValueError:
        raise _invalid("callback_url has an invalid port") from None
    ip = _literal_ip(parts.hostname)
    if ip is None:
        host = parts.hostname.lower().rstrip(".")
        if not allow_private and (host in ("localhost", "localhost.localdomain")
                                  or host.endswith(".localhost")):
            raise _not_allowed(parts.hostname)
    elif not _allowed(ip, allow_private):
        raise _not_allowed(parts.hostname)
    return url


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, code="invalid_callback_url")


def _not_allowed(host: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"callback_url host {host} is not a public address; refused (SSRF guard; "
        "set MUSICFN_CALLBACK_ALLOW_PRIVATE=true to allow private ones)",
        code="callback_url_not_allowed")


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host names literally, including legacy IPv4 forms (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``) that resolvers accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _allowed(ip: IPAddress, allow_private: bool) -> bool:
    """Globally routable addresses always; private ones (incl. loopback, 100.64/10) only
    when allowed; link-local, metadata, multicast, reserved and unspecified never. IPv6
    addresses that embed an IPv4 one (mapped, 6to4, Teredo) must pass for both."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _allowed(ip.ipv4_mapped, allow_private)
        # (NAT64's 64:ff9b::/96 is inside ::/8, reserved, so refused below.)
        embedded = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if not all(_allowed(v4, allow_private) for v4 in embedded if v4 is not None):
            return False
    if ip.is_loopback:  # before is_reserved: Python counts ::1 in the reserved ::/8
        return allow_private
    if (ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
            or any(ip in net for net in _METADATA)):
        return False
    return ip.is_global or allow_private


async def _resolve_checked(parts: SplitResult, allow_private: bool) -> str:
    """Resolve the host and return one address, if every address it has is allowed."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or not all(_allowed(a, allow_private) for a in addresses):
        raise _Refused(f"host {host} resolves to an address that is not allowed")
    return str(addresses[0])


async def deliver(url: str, event: WebhookEvent, *, secret: str | None, allow_private: bool,
                  timeout_s: float, attempts: int, backoff_s: float = 1.0,
                  max_delay_s: float = 60.0) -> Delivery:
    """POST ``event`` to ``url`` with Standard Webhooks headers; never raises for a failed
    delivery (a client's broken webhook must not fail a job): the result says what happened.

    With ``secret`` (``whsec_…``) each attempt carries ``webhook-signature``; with None the
    event is sent **unsigned** (only ``webhook-id`` and ``webhook-timestamp``). Up to
    ``attempts`` requests of at most ``timeout_s`` each: network errors, 429 and 5xx are retried
    after exponential backoff with jitter (``backoff_s``, doubled each time), or after the
    response's Retry-After, both capped at ``max_delay_s``; other statuses (incl. 3xx: redirects
    are not followed) and SSRF refusals end the delivery. The address is resolved and checked
    on every attempt.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    fields: dict[str, Any] = {"event_type": event.type, "webhook_id": event.webhook_id,
                              "signed": secret is not None}
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        validate_callback_url(url, allow_private=allow_private)
        if secret is not None:
            validate_secret(secret)
    except MusicfnError as exc:
        log.error("webhook %s to %s not sent: %s", event.webhook_id, host, exc.message)
        return Delivery(status="failed", attempts=0, error=exc.message, **fields)
    body = event.model_dump_json().encode()
    http_status: int | None = None
    error: str | None = None
    made = 0
    while made < attempts:
        made += 1
        retry_after: float | None = None
        try:
            async with asyncio.timeout(timeout_s):
                http_status, retry_header = await _post(parts, body, secret, event.webhook_id,
                                                        allow_private, timeout_s)
            error = None
        except _Refused as exc:
            made -= 1  # nothing was sent
            http_status, error = None, f"refused: {exc}"
            break
        except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
            http_status, error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # never raise: note it and stop
            log.exception("webhook %s to %s failed unexpectedly", event.webhook_id, host)
            http_status, error = None, f"{type(exc).__name__}: {exc}"
            break
        else:
            if 200 <= http_status < 300:
                log.info("webhook %s delivered to %s (attempt %d)", event.webhook_id, host, made)
                return Delivery(status="delivered", attempts=made, http_status=http_status,
                                delivered_at=datetime.now(UTC), **fields)
            error = f"HTTP {http_status}"
            if http_status < 500 and http_status != 429:
                break
            retry_after = _retry_after_s(retry_header)
        log.info("webhook %s to %s: attempt %d failed (%s)", event.webhook_id, host, made, error)
        if made < attempts:
            await asyncio.sleep(_delay_s(made, retry_after, backoff_s, max_delay_s))
    log.warning("webhook %s to %s failed after %d attempt(s): %s", event.webhook_id, host, made,
                error)
    return Delivery(status="failed", attempts=made, http_status=http_status, error=error,
                    **fields)


async def _post(parts: SplitResult, body: bytes, secret: str | None, msg_id: str,
                allow_private: bool, timeout_s: float) -> tuple[int, str | None]:
    """One attempt: resolve + check, POST to the checked address; (status, Retry-After)."""
    try:
        address = await _resolve_checked(parts, allow_private)
    except socket.gaierror as exc:
        raise OSError(f"{parts.hostname} does not resolve: {exc}") from None
    ip = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{ip}:{parts.port}" if parts.port else ip).geturl()
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {**signature_headers(secret, msg_id, timestamp, body),
               "host": parts.netloc, "user-agent": USER_AGENT}
    # TLS: SNI and certificate checks against the name, while connecting to the checked address.
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    async with (httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                  trust_env=False) as client,
                client.stream("POST", target, content=body, headers=headers,
                              extensions=extensions) as response):
        # The body is not read: a receiver's answer is its status, and it could be huge.
        return response.status_code, response.headers.get("retry-after")


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _delay_s(attempt: int, retry_after: float | None, backoff_s: float,
             max_delay_s: float) -> float:
    base: float = backoff_s * 2 ** (attempt - 1)
    delay = base / 2 + random.uniform(0, base / 2)  # jitter: spread retries of many jobs
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, max_delay_s)
