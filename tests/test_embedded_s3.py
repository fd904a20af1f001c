"""The embedded SeaweedFS supervisor: start, reuse, stop, and its clear errors."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfn.errors import EmbeddedS3Error
from storage.embedded_s3 import EmbeddedS3, probe_server
from tests.support import S3_ACCESS_KEY, S3_SECRET_KEY, free_port_block, start_s3_server


@pytest.fixture
def foreign_http_server() -> Iterator[int]:
    """Some other program listening on a port (a plain HTTP server)."""
    port = free_port_block(5, gap=10000)
    httpd = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield port
    httpd.shutdown()
    httpd.server_close()


def test_start_reuse_stop(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path / "s3")
    try:
        assert not server.reused and server.is_running()
        assert server.pid_file.exists()
        second = EmbeddedS3(tmp_path / "s3", server.port, S3_ACCESS_KEY, S3_SECRET_KEY).start()
        assert second.reused
        second.stop()  # a reused server is not ours to stop
        assert server.is_running()
    finally:
        server.stop()
    assert not server.is_running()
    assert probe_server(server.port) is None
    assert not server.pid_file.exists()


def test_stop_recorded_server_from_another_handle(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path / "s3")
    other = EmbeddedS3(tmp_path / "s3", server.port, S3_ACCESS_KEY, S3_SECRET_KEY)
    assert other.stop_recorded()
    assert not server.is_running()
    server.stop()


def test_port_taken_by_another_program(tmp_path: Path, foreign_http_server: int) -> None:
    server = EmbeddedS3(tmp_path / "s3", foreign_http_server, S3_ACCESS_KEY, S3_SECRET_KEY)
    with pytest.raises(EmbeddedS3Error, match=f"port {foreign_http_server} .* taken by another "
                                              "program.*MUSICFN_EMBEDDED_S3_PORT"):
        server.start()


def test_other_port_of_the_block_taken(tmp_path: Path, foreign_http_server: int) -> None:
    server = EmbeddedS3(tmp_path / "s3", foreign_http_server - 2, S3_ACCESS_KEY, S3_SECRET_KEY)
    if probe_server(server.port) is not None:
        pytest.fail("test setup: expected the S3 port itself to be free")
    with pytest.raises(EmbeddedS3Error, match=f"taken: .*={foreign_http_server}"):
        server.start()


def test_missing_binary(tmp_path: Path) -> None:
    port = free_port_block(5, gap=10000)
    server = EmbeddedS3(tmp_path / "s3", port, S3_ACCESS_KEY, S3_SECRET_KEY,
                        binary=tmp_path / "no-such-weed")
    with pytest.raises(EmbeddedS3Error, match=r"SeaweedFS binary not found.*make install"):
        server.start()


def test_wrong_credentials_for_a_running_server(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path / "s3")
    try:
        intruder = EmbeddedS3(tmp_path / "s3", server.port, "someone", "else")
        with pytest.raises(EmbeddedS3Error, match="rejects musicfn's credentials"):
            intruder.start(timeout_s=10)
    finally:
        server.stop()
