"""Completion webhooks: Standard Webhooks signing (checked with the reference library), the
event envelope, delivery with retries against a real local HTTP server, and the SSRF guard."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs.callbacks import (
    Delivery,
    WebhookEvent,
    _Refused,
    _resolve_checked,
    deliver,
    validate_callback_url,
    wants,
)
from jobs.webhook_signing import new_secret, sign, validate_secret
from musicfn.errors import ConfigurationError, InvalidRequestError
from tests.support import free_port_block

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST with the next scripted response."""

    url: str
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port_block()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hook")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            rec.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()},
                                body, time.monotonic()))
            status, headers = rec.script.pop(0) if rec.script else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def _event(status: str = "completed", job_id: str = "gen_01abc") -> WebhookEvent:
    return WebhookEvent.from_record({"id": job_id, "status": status, "audio_url": None},
                                    at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def _deliver(url: str, event: WebhookEvent | None = None, **kw: Any) -> Delivery:
    args: dict[str, Any] = {"secret": None, "allow_private": True, "timeout_s": 5.0,
                            "attempts": 3, "backoff_s": 0.01, "max_delay_s": 2.0} | kw
    return asyncio.run(deliver(url, event or _event(), **args))


# -- signing ---------------------------------------------------------------------------------

def test_sign_matches_the_standard_webhooks_vector() -> None:
    assert sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secret_is_a_valid_whsec_secret() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert validate_secret(a) == a
    msg = b'{"x": 1}'
    ts = int(time.time())
    Webhook(a).verify(msg, {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
                            "webhook-signature": sign(a, "msg_1", ts, msg)})


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!",
                                    "whsec_c2hvcnQ="])
def test_bad_secrets_are_configuration_errors(secret: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        sign(secret, "msg", 1, b"{}")
    assert err.value.code == "invalid_webhook_secret"


def test_signed_delivery_verifies_with_the_reference_library(receiver: Receiver) -> None:
    secret = new_secret()
    result = _deliver(receiver.url, secret=secret)
    assert result.status == "delivered" and result.signed and result.attempts == 1
    assert result.http_status == 200 and result.delivered_at is not None
    hit = receiver.hits[0]
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["webhook-id"] == "msg_gen_01abc_generation.completed"
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 30
    payload = Webhook(secret).verify(hit.body, hit.headers)
    assert payload == {"type": "generation.completed", "timestamp": "2026-01-02T03:04:05Z",
                       "data": {"id": "gen_01abc", "status": "completed", "audio_url": None}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(hit.body.replace(b"completed", b"failed"), hit.headers)
    ts = int(hit.headers["webhook-timestamp"])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(hit.body, {**hit.headers, "webhook-timestamp": str(ts - 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(hit.body, hit.headers)


def test_unsigned_delivery_has_no_signature_header(receiver: Receiver) -> None:
    result = _deliver(receiver.url, secret=None)
    assert result.status == "delivered" and not result.signed
    assert "webhook-signature" not in receiver.hits[0].headers
    assert receiver.hits[0].headers["webhook-id"] == "msg_gen_01abc_generation.completed"


def test_invalid_secret_fails_the_delivery_without_raising(receiver: Receiver) -> None:
    result = _deliver(receiver.url, secret="whsec_short")
    assert result.status == "failed" and result.attempts == 0 and result.error
    assert receiver.hits == []


# -- events and filters ----------------------------------------------------------------------

def test_event_types_follow_the_record_status() -> None:
    assert _event("processing").type == "generation.started"
    assert _event("pending").type == "generation.started"
    for status in ("completed", "failed", "canceled"):
        event = _event(status)
        assert event.type == "generation.completed" and event.data["status"] == status
    assert _event("processing").webhook_id == "msg_gen_01abc_generation.started"


@pytest.mark.parametrize("kwargs", [
    {"type": "generation.completed", "data": {"id": "a", "status": "processing"}},
    {"type": "generation.started", "data": {"id": "a", "status": "failed"}},
    {"type": "generation.completed", "data": {"status": "completed"}},
    {"type": "generation.completed", "data": {"id": "a\r\nx: y", "status": "completed"}},
    {"type": "generation.done", "data": {"id": "a", "status": "completed"}},
])
def test_inconsistent_events_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WebhookEvent(timestamp=datetime.now(UTC), **kwargs)


def test_event_timestamp_must_be_aware() -> None:
    with pytest.raises(ValidationError):
        WebhookEvent(type="generation.completed", timestamp=datetime(2026, 1, 1),
                     data={"id": "a", "status": "completed"})


def test_wants_defaults_to_completed_only() -> None:
    assert wants(None, "generation.completed") and not wants(None, "generation.started")
    assert wants(["start"], "generation.started")
    assert not wants(["start"], "generation.completed")
    assert wants(["start", "completed"], "generation.completed")
    assert not wants([], "generation.completed")


# -- delivery --------------------------------------------------------------------------------

def test_retries_5xx_then_succeeds_with_a_stable_id(receiver: Receiver) -> None:
    receiver.script = [(503, {}), (500, {})]
    secret = new_secret()
    result = _deliver(receiver.url, secret=secret, attempts=4)
    assert result.status == "delivered" and result.attempts == 3
    assert len(receiver.hits) == 3
    assert {h.headers["webhook-id"] for h in receiver.hits} == {result.webhook_id}
    assert len({h.body for h in receiver.hits}) == 1
    for hit in receiver.hits:
        Webhook(secret).verify(hit.body, hit.headers)
    assert receiver.hits[0].headers["host"] == urlsplit(receiver.url).netloc  # pinned to the IP


def test_gives_up_after_attempts(receiver: Receiver) -> None:
    receiver.script = [(500, {})] * 10
    result = _deliver(receiver.url, attempts=3)
    assert result.status == "failed" and result.attempts == 3 and result.http_status == 500
    assert len(receiver.hits) == 3


def test_429_is_retried(receiver: Receiver) -> None:
    receiver.script = [(429, {})]
    assert _deliver(receiver.url).attempts == 2


@pytest.mark.parametrize("status", [400, 404, 410])
def test_client_errors_are_not_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [(status, {})]
    result = _deliver(receiver.url, attempts=3)
    assert result.status == "failed" and result.attempts == 1
    assert result.http_status == status and result.error == f"HTTP {status}"
    assert len(receiver.hits) == 1


def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.script = [(503, {"Retry-After": "1"})]
    result = _deliver(receiver.url, backoff_s=0.01, max_delay_s=10.0)
    assert result.status == "delivered" and result.attempts == 2
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.95


def test_retry_after_is_capped(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "3600"})]
    started = time.monotonic()
    result = _deliver(receiver.url, backoff_s=0.01, max_delay_s=0.3)
    assert result.status == "delivered" and time.monotonic() - started < 5


def test_retry_after_http_date_is_understood(receiver: Receiver) -> None:
    receiver.script = [(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})]  # in the past
    started = time.monotonic()
    assert _deliver(receiver.url).status == "delivered"
    assert time.monotonic() - started < 2


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script = [(302, {"Location": receiver.url + "/elsewhere"})]
    result = _deliver(receiver.url, attempts=3)
    assert result.status == "failed" and result.http_status == 302 and result.attempts == 1
    assert [h.path for h in receiver.hits] == ["/hook"]


def test_unreachable_target_fails_without_raising() -> None:
    url = f"http://127.0.0.1:{free_port_block()}/hook"
    result = _deliver(url, attempts=2, timeout_s=2.0)
    assert result.status == "failed" and result.attempts == 2
    assert result.http_status is None and result.error


def test_private_receiver_refused_without_opt_in(receiver: Receiver) -> None:
    result = _deliver(receiver.url, allow_private=False)
    assert result.status == "failed" and result.attempts == 0
    assert result.error and "not a public address" in result.error
    assert receiver.hits == []


def test_names_are_checked_after_resolution() -> None:
    # What catches a name that (re)binds to a private address at delivery time.
    with pytest.raises(_Refused):
        asyncio.run(_resolve_checked(urlsplit("http://localhost:1/x"), False))


# -- SSRF policy -----------------------------------------------------------------------------

REFUSED = ["100.64.0.1", "100.100.100.200", "100.127.255.254", "169.254.169.254", "10.1.2.3",
           "172.16.5.5", "192.168.0.10", "127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1",
           "0.0.0.0", "192.0.2.1", "198.18.0.1", "240.0.0.1", "255.255.255.255", "224.0.0.1",
           "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:100.100.100.200]", "[fc00::1]",
           "[fd12:3456::1]", "[fe80::1]", "[ff02::1]", "[2001:db8::1]", "[64:ff9b::a00:1]",
           "[2002:a00:1::]", "localhost", "api.localhost", "LOCALHOST."]
REFUSED_EVEN_WHEN_PRIVATE_ALLOWED = [
    "169.254.169.254", "100.100.100.200", "[fd00:ec2::254]", "[fe80::1]", "0.0.0.0",
    "224.0.0.1", "[ff02::1]", "[::ffff:169.254.169.254]", "[2002:a9fe:a9fe::]", "240.0.0.1"]


@pytest.mark.parametrize("host", REFUSED)
def test_non_public_targets_are_refused(host: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_callback_url(f"http://{host}:8080/hook")
    assert err.value.code == "callback_url_not_allowed"


@pytest.mark.parametrize("host", REFUSED_EVEN_WHEN_PRIVATE_ALLOWED)
def test_metadata_and_special_targets_refused_even_when_private_allowed(host: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_callback_url(f"http://{host}/latest/meta-data", allow_private=True)


@pytest.mark.parametrize("host", ["10.0.0.5", "100.64.0.1", "127.0.0.1", "[::1]",
                                  "[fc00::1]", "localhost"])
def test_private_targets_allowed_when_opted_in(host: str) -> None:
    assert validate_callback_url(f"http://{host}/hook", allow_private=True)


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/musicfn?x=1", "http://8.8.8.8:8080/hook", "http://1.1.1.1/",
    "http://100.128.0.1/", "http://[2606:4700:4700::1111]/hook", "http://[::ffff:8.8.8.8]/",
])
def test_public_targets_pass(url: str) -> None:
    assert validate_callback_url(url) == url


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "example.com",
    "http://", "http://example.com:99999/", "http://example.com/" + "a" * 3000,
    "http://bücher.example/",
])
def test_malformed_callback_urls(url: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_callback_url(url)
    assert err.value.code == "invalid_callback_url"


def test_envelope_is_json_serialisable() -> None:
    assert json.loads(_event().model_dump_json())["type"] == "generation.completed"
