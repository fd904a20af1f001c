"""Completion callbacks: SSRF guard and delivery with retries, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from deployments.callbacks import post_callback, resolve_checked, validate_callback_url
from musicfn.errors import InvalidRequestError


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers POSTs with the next status in ``statuses`` and records the bodies."""

    statuses: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, Any]]] = []
    hosts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        type(self).hosts.append(self.headers.get("host", ""))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"statuses": [], "received": [], "hosts": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/x", "http://api.localhost/x",
    "http://10.1.2.3/", "http://192.168.0.10/", "http://172.16.5.5/", "http://169.254.169.254/",
    "http://[::1]/", "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
    "http://224.0.0.1/",
])
def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_callback_url(url)
    assert err.value.code == "callback_url_not_allowed"


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "example.com",
    "http://", "http://example.com:99999/", "http://example.com/" + "a" * 3000,
])
def test_malformed_callback_urls(url: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_callback_url(url)
    assert err.value.code == "invalid_callback_url"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data",
                                 "http://[fe80::1]/", "http://224.0.0.1/", "http://0.0.0.0/"])
def test_metadata_and_special_targets_refused_even_when_private_allowed(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_callback_url(url, allow_private=True)
    assert validate_callback_url("http://10.0.0.5/hook", allow_private=True)


def test_public_targets_pass_shape_check() -> None:
    assert validate_callback_url("https://hooks.example.com/musicfn?x=1")
    assert validate_callback_url("http://8.8.8.8:8080/hook")


def test_names_resolving_to_private_addresses_are_refused() -> None:
    # "localhost" resolves to loopback: the resolved-address check catches names, not only IPs.
    with pytest.raises(InvalidRequestError):
        asyncio.run(resolve_checked("http://localhost:1/x", allow_private=False))


def test_delivery_retries_5xx_then_succeeds(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    handler.statuses = [503, 500, 200]
    ok = asyncio.run(post_callback(url, {"id": "abc", "status": "completed"},
                                   allow_private=True, attempts=4, backoff_s=0.01))
    assert ok
    assert handler.received == [{"id": "abc", "status": "completed"}] * 3
    assert handler.hosts[0] == url.split("/")[2]  # original Host kept when pinned to the IP


def test_delivery_gives_up_after_attempts(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    handler.statuses = [500] * 10
    assert not asyncio.run(post_callback(url, {"id": "x"}, allow_private=True, attempts=3,
                                         backoff_s=0.01))
    assert len(handler.received) == 3


def test_client_errors_are_not_retried(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    handler.statuses = [410]
    assert not asyncio.run(post_callback(url, {"id": "x"}, allow_private=True, attempts=3,
                                         backoff_s=0.01))
    assert len(handler.received) == 1


def test_private_receiver_refused_without_opt_in(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    assert not asyncio.run(post_callback(url, {"id": "x"}, allow_private=False, attempts=2,
                                         backoff_s=0.01))
    assert handler.received == []


def test_unreachable_target_fails_without_raising() -> None:
    assert not asyncio.run(post_callback("http://127.0.0.1:9/hook", {"id": "x"},
                                         allow_private=True, attempts=2, backoff_s=0.01,
                                         timeout_s=1))
