"""The lean S3 path of ObjectStore (put, get, head) against a real SeaweedFS, checked against
boto3 on the same objects; retries and connection reuse against a real local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from musicfn.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
    TransientStorageError,
)
from musicfn.ports import free_port_block
from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3
from storage.http_lean import LeanConnection
from storage.objects import ObjectStore
from storage.s3_lean import LeanS3, S3Target, enc
from tests.support import lean_get, make_settings

ODD_KEYS = ["a b/c d.wav", "unicodé/中文/ключ.json", "plus+sign/a+b=c&d.json",
            "percent%20/100%.txt", "q?x#frag;semi:colon@at$dollar,comma!'()*~.bin",
            "tilde~/under_score-dash.wav", "brackets[1]{2}<3>|pipe^caret`tick\"quote.txt"]


def _boto(settings: Settings) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.s3_region,
        aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def test_round_trip_matches_boto3(objects: ObjectStore, settings: Settings) -> None:
    boto = _boto(settings)
    meta = {"musicfn-writer": "musicfn", "Musicfn-Id": "x  y", "empty": ""}
    etag = objects.put("generations/a.wav", b"RIFF....", content_type="audio/wav",
                       metadata=meta)
    assert etag == hashlib.md5(b"RIFF....").hexdigest()
    info = objects.head("generations/a.wav")
    theirs = boto.head_object(Bucket=settings.bucket, Key="generations/a.wav")
    assert info.key == "generations/a.wav"
    assert (info.size, info.etag, info.content_type) == (8, etag, "audio/wav")
    # (SeaweedFS drops empty values, whichever client sent them)
    assert info.metadata == theirs["Metadata"] == {"musicfn-writer": "musicfn",
                                                    "musicfn-id": "x  y"}
    assert info.last_modified == theirs["LastModified"]
    assert info.last_modified.utcoffset() is not None
    assert info.last_modified.astimezone(UTC).tzinfo is UTC
    assert objects.get("generations/a.wav") == b"RIFF...."
    assert objects.exists("generations/a.wav")
    # Written by boto3, read by the lean path; an empty object too.
    boto.put_object(Bucket=settings.bucket, Key="b/empty", Body=b"", ContentType="text/plain")
    assert objects.get("b/empty") == b""
    assert objects.head("b/empty").size == 0
    assert objects.put("b/empty2", b"", content_type="text/plain") == hashlib.md5(
        b"").hexdigest()


def test_keys_that_need_encoding(objects: ObjectStore, settings: Settings) -> None:
    for i, key in enumerate(ODD_KEYS):
        objects.put(key, key.encode(), content_type="text/plain", metadata={"n": str(i)})
    listed = [o["Key"] for o in _boto(settings).list_objects_v2(
        Bucket=settings.bucket)["Contents"]]
    assert sorted(listed) == sorted(ODD_KEYS)  # stored under exactly these keys
    for i, key in enumerate(ODD_KEYS):
        assert objects.get(key) == key.encode()
        assert objects.head(key).metadata == {"n": str(i)}


def test_conditional_put_and_missing_objects(objects: ObjectStore) -> None:
    objects.put("once.json", b"1", content_type="application/json", if_absent=True)
    with pytest.raises(ObjectExistsError, match="already exists"):
        objects.put("once.json", b"2", content_type="application/json", if_absent=True)
    assert objects.get("once.json") == b"1"
    with pytest.raises(ObjectNotFoundError, match="no such object"):
        objects.get("missing.json")
    with pytest.raises(ObjectNotFoundError):
        objects.head("missing.json")
    assert not objects.exists("missing.json")
    with pytest.raises(StorageError, match="ASCII"):
        objects.put("m.json", b"1", content_type="application/json", metadata={"k": "é"})
    with pytest.raises(StorageError, match="ASCII"):
        objects.put("m.json", b"1", content_type="a\r\nX-Injected: 1")


def test_missing_bucket(settings: Settings) -> None:
    other = ObjectStore(settings, bucket="no-such-bucket-lean")
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-lean"):
        other.get("x")
    # A HEAD answer has no body, so no error code: a missing object, as boto3 reports it.
    with pytest.raises(ObjectNotFoundError):
        other.head("x")


def test_wrong_credentials_are_access_denied(objects: ObjectStore, s3_server: EmbeddedS3,
                                             tmp_data: Path, settings: Settings) -> None:
    objects.put("k", b"v", content_type="text/plain")
    for bad in (make_settings(s3_server, tmp_data, bucket=settings.bucket,
                              s3_secret_key="wrong-secret"),
                make_settings(s3_server, tmp_data, bucket=settings.bucket,
                              s3_access_key="nobody")):
        store = ObjectStore(bad)
        with pytest.raises(AccessDeniedError):
            store.get("k")
        with pytest.raises(AccessDeniedError):
            store.head("k")
        for size in (10, 3_000_000):  # refused before or while the body is sent
            with pytest.raises(AccessDeniedError):
                store.put("k", b"x" * size, content_type="text/plain")
    assert objects.get("k") == b"v"


def test_unreachable_endpoint(s3_server: EmbeddedS3, tmp_data: Path) -> None:
    port = free_port_block()  # nothing listens there
    settings = make_settings(s3_server, tmp_data, s3_endpoint_url=f"http://127.0.0.1:{port}")
    store = ObjectStore(settings)
    started = time.monotonic()
    for call in (lambda: store.get("k"), lambda: store.head("k"),
                 lambda: store.put("k", b"v", content_type="text/plain")):
        with pytest.raises(StorageUnreachableError, match=f"127.0.0.1:{port}") as err:
            call()
        assert err.value.retryable
    with pytest.raises(StorageUnreachableError):  # exists() goes through head
        store.exists("k")
    assert time.monotonic() - started < 15


def test_large_body(objects: ObjectStore) -> None:
    body = os.urandom(5 * 1024 * 1024 + 7)
    etag = objects.put("big/x.wav", body, content_type="audio/wav")
    assert etag == hashlib.md5(body).hexdigest()
    assert objects.head("big/x.wav").size == len(body)
    assert objects.get("big/x.wav") == body


def test_concurrent_threads_share_one_store(objects: ObjectStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                key = f"t{n}/{i}.json"
                body = f"{n}-{i}".encode() * (1 + i * 100)
                etag = objects.put(key, body, content_type="application/json",
                                   metadata={"n": str(n)})
                assert objects.head(key).etag == etag
                assert objects.get(key) == body
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert objects.head("t7/14.json").metadata == {"n": "7"}


def _botocore_signature(method: str, url: str, headers: dict[str, str], body: bytes,
                        stamp: str) -> str:
    auth = S3SigV4Auth(Credentials("AK", "SK"), "s3", "eu-west-3")
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    request.context["timestamp"] = stamp
    string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
    return str(auth.signature(string_to_sign, request))


@pytest.mark.parametrize(("method", "key", "params", "extra"), [
    ("PUT", "dir/a b+c%d&é中/x?y#z=~.wav", {},
     {"content-type": "audio/wav", "x-amz-meta-id": " a  b ", "if-none-match": "*"}),
    ("GET", "", {"list-type": "2", "prefix": "a b/é+", "continuation-token": "x/=+&y"}, {}),
    ("HEAD", "k", {}, {}),
])
def test_signature_is_botocores(method: str, key: str, params: dict[str, str],
                                extra: dict[str, str]) -> None:
    """The spec, beyond what SeaweedFS checks: the signature botocore computes."""
    s3 = LeanS3(S3Target(endpoint="https://s3.example.com:8443/base", bucket="b-1",
                         region="eu-west-3", access_key="AK", secret_key="SK"))
    body = b"payload" if method == "PUT" else b""
    digest = hashlib.sha256(body).hexdigest()
    path = "/base/b-1" + (f"/{enc(key, '/')}" if key else "")
    query = "&".join(f"{enc(k, '')}={enc(v, '')}" for k, v in sorted(params.items()))
    signed = s3._sign(method, path, query, extra, digest)
    url = f"https://s3.example.com:8443{path}" + (f"?{query}" if query else "")
    theirs = _botocore_signature(method, url, {k: v for k, v in signed.items()
                                               if k != "authorization"}, body,
                                 signed["x-amz-date"])
    assert signed["authorization"].endswith(f"Signature={theirs}")
    assert signed["host"] == "s3.example.com:8443"


# -- retries and connection reuse, against a real local HTTP server -------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 0.3  # an idle kept-alive connection is closed by the server after this
    failures: dict[str, int] = {}  # noqa: RUF012 - per test server, reset by the fixture
    requests: list[str] = []  # noqa: RUF012

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.requests.append(f"{self.command} {self.path}")
        if self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        left = self.failures.get(self.path, 0)
        if left:
            self.failures[self.path] = left - 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"e1"')
        self.send_header("Last-Modified", "Tue, 01 Dec 2026 03:16:16 GMT")
        self.send_header("X-Amz-Meta-Musicfn-Id", "abc")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(b"hello")

    def do_HEAD(self) -> None:
        self._answer(b"a body of 26 bytes, unsent")

    def do_PUT(self) -> None:
        self._answer(b"")


@pytest.fixture
def http_s3() -> Iterator[LeanS3]:
    _Handler.failures = {}
    _Handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield LeanS3(S3Target(endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                          bucket="b", region="us-east-1", access_key="a", secret_key="s",
                          max_attempts=3))
    server.shutdown()


def test_head_has_no_body_and_the_connection_is_reused(http_s3: LeanS3) -> None:
    info = http_s3.head("k")
    assert (info.size, info.etag, info.metadata) == (26, "e1", {"musicfn-id": "abc"})
    assert info.last_modified.isoformat() == "2026-12-01T03:16:16+00:00"
    assert http_s3.get("k") == b"hello"  # on the same connection, right after the HEAD
    assert len(http_s3._idle) == 1


def test_transient_answers_are_retried(http_s3: LeanS3) -> None:
    _Handler.failures["/b/k"] = 2
    assert http_s3.put("k", b"body", content_type="text/plain") == "e1"
    assert _Handler.requests == ["PUT /b/k"] * 3
    _Handler.failures["/b/k"] = 3
    with pytest.raises(TransientStorageError):
        http_s3.get("k")


def test_a_connection_closed_while_idle_costs_no_attempt(http_s3: LeanS3) -> None:
    once = LeanS3(dataclasses.replace(http_s3.target, max_attempts=1))
    assert once.get("k") == b"hello"
    time.sleep(0.6)  # the server has closed the idle connection meanwhile
    assert once.get("k") == b"hello"
    assert once.put("k", b"v" * 300_000, content_type="text/plain") == "e1"
    time.sleep(0.6)
    assert once.put("k", b"v" * 300_000, content_type="text/plain") == "e1"


def test_lean_connection_request_returns_headers() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = LeanConnection("127.0.0.1", server.server_address[1], tls=False,
                              connect_timeout_s=2, read_timeout_s=5)
        status, headers, body, reusable = conn.request("HEAD", "/x", {"Host": "h"})
        assert (status, headers["content-length"], body, reusable) == (200, "26", b"", True)
        assert headers["x-amz-meta-musicfn-id"] == "abc"
        assert conn.request("PUT", "/x", {"Host": "h"}, b"data")[0] == 200
        assert lean_get(conn, "/x", "h") == (200, b"hello", True)
        conn.close()
    finally:
        server.shutdown()
