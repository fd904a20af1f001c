"""Bulk reads for reindex (lean HTTP, signed S3 GET/list, parallel reindex) and the coalesced
catalogue writes of object events (real SeaweedFS, real DuckDB, real Ray)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from musicfn.errors import AccessDeniedError, BucketNotFoundError, ObjectNotFoundError
from musicfn.settings import Settings
from storage.catalogue.events import ClaimRequest, EventRecord
from storage.catalogue.store import Catalogue
from storage.http_lean import LeanConnection, ProtocolError
from storage.keys import new_id, utc_now
from storage.objects import ObjectStore
from storage.owner_batch import Coalescer
from storage.reindex import reindex
from storage.s3_bulk import BulkS3, S3Target
from storage.sidecar import Sidecar
from storage.tracks import TrackStore
from tests.support import lean_get
from tests.support.tracks import make_track


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"world", b"!" * 70_000):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.send_response(404)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"nop")
        elif self.path == "/eof":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        elif self.path == "/garbage":
            self.close_connection = True
            self.wfile.write(b"SPDY/9 nonsense\r\n\r\n")
        else:
            body = self.path.encode() * 3
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_lean_connection_frames_every_kind_of_body(http_port: int) -> None:
    conn = LeanConnection("127.0.0.1", http_port, tls=False, connect_timeout_s=2,
                          read_timeout_s=5)
    assert lean_get(conn, "/a", "x") == (200, b"/a/a/a", True)
    assert lean_get(conn, "/bb", "x") == (200, b"/bb/bb/bb", True)  # the same connection
    status, body, reusable = lean_get(conn, "/chunked", "x")
    assert (status, body[:11], len(body), reusable) == (200, b"hello world", 70_011, True)
    assert lean_get(conn, "/close", "x") == (404, b"nop", False) and not conn.connected
    assert lean_get(conn, "/eof", "x") == (200, b"until the end", False)
    assert lean_get(conn, "/again", "x")[1] == b"/again/again/again"
    with pytest.raises(ProtocolError):
        lean_get(conn, "/garbage", "x")
    assert not conn.connected


def test_bulk_s3_lists_reads_and_translates_errors(objects: ObjectStore,
                                                   settings: Settings) -> None:
    keys = ["generations/2026/11/30/a.json", "generations/2026/11/30/b c+d%e&f.json",
            "generations/top.txt"]
    for key in keys:
        objects.put(key, key.encode(), content_type="application/json")
    s3 = BulkS3(S3Target.from_settings(settings))
    assert s3.list_keys("generations/") == sorted(keys)
    assert s3.list_dirs("generations/") == (["generations/top.txt"], ["generations/2026/"])
    assert [s3.get(k) for k in keys] == [k.encode() for k in keys]
    assert isinstance(s3.get("generations/none.json"), ObjectNotFoundError)
    other = BulkS3(S3Target.from_settings(settings, bucket="no-such-bucket-here"))
    with pytest.raises(BucketNotFoundError):
        other.list_page("x/")
    wrong = settings.model_copy(update={"s3_secret_key": type(settings.s3_secret_key)("no")})
    assert isinstance(BulkS3(S3Target.from_settings(wrong)).get(keys[0]), AccessDeniedError)


@pytest.mark.ray
def test_reindex_as_ray_tasks_gives_the_rows_of_threads(ray_cluster: Any, objects: ObjectStore,
                                                        settings: Settings,
                                                        tmp_data: Path) -> None:
    store = TrackStore(objects, settings)
    base = datetime(2026, 10, 30, 22, tzinfo=UTC)
    for n in range(30):
        sc, audio = make_track(store, n, base + timedelta(hours=7 * n),
                               prefix="processed" if n % 4 == 0 else "generations")
        store.write(sc, audio)
    by_threads = Catalogue(tmp_data / "threads.duckdb")
    by_ray = Catalogue(tmp_data / "ray.duckdb")
    a = reindex(objects, by_threads, settings, parallel="threads")
    b = reindex(objects, by_ray, settings, parallel="ray")
    assert (a.parallel, b.parallel) == ("threads", "ray")
    assert a.sidecars == b.sidecars == 30 and a.partitions == b.partitions > 1
    assert by_ray.rows() == by_threads.rows()
    by_threads.close()
    by_ray.close()


def test_coalescer_batches_concurrent_calls_and_shares_failures() -> None:
    calls: list[list[int]] = []

    async def many(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 2 for i in items]

    async def main() -> list[Any]:
        c: Coalescer[int, int] = Coalescer(many)
        in_flight = asyncio.create_task(c.one(0))
        await asyncio.sleep(0.001)  # its call is out; the next four wait for it, together
        first = await asyncio.gather(in_flight, *(c.one(i) for i in range(1, 5)))
        second = await asyncio.gather(c.one(12), c.one(13), return_exceptions=True)
        return [first, second]

    first, second = asyncio.run(main())
    assert first == [0, 2, 4, 6, 8]
    assert calls[0] == [0] and calls[1] == [1, 2, 3, 4]  # first at once, the rest together
    assert all(isinstance(e, ValueError) for e in second)


def test_claims_in_one_batch_and_completions_with_a_re_driven_row(tmp_data: Path) -> None:
    cat = Catalogue(tmp_data / "c.duckdb")
    req = ClaimRequest(bucket="b", key="incoming/x.wav", etag="e", track_id="job-1",
                       stale_after_s=900)
    again = req.model_copy(update={"track_id": "job-2"})
    first, dup = cat.claim_events([req, again])
    assert first.claimed and not dup.claimed and dup.record.track_id == "job-1"
    assert cat.claim_events([req])[0].claimed  # the same job, re-driven: its own claim
    track = Sidecar(id=new_id(), kind="upload", status="completed", created_at=utc_now())
    done = EventRecord(bucket="b", key="incoming/x.wav", etag="e", status="processed",
                       track_id=track.id, processed_at=utc_now())
    assert cat.complete_uploads([track], [done]) == 1
    stale = track.model_copy(update={"status": "processing", "prompt": "stale"})
    assert cat.complete_uploads([stale], [done, done]) == 1  # existing row: ranked upsert
    assert cat.get(track.id) == track
    assert cat.get_event("b", "incoming/x.wav", "e") == done
    cat.close()
