"""The object store against a real SeaweedFS server over real HTTP."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from musicfn.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    InvalidRequestError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageUnreachableError,
)
from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3
from storage.keys import TrackKey, new_id
from storage.objects import ObjectStore
from tests.support import make_settings, start_s3_server


def _http(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_put_get_head_with_metadata(objects: ObjectStore) -> None:
    etag = objects.put("generations/a.wav", b"RIFF....", content_type="audio/wav",
                       metadata={"musicfn-writer": "musicfn", "musicfn-id": "x"})
    info = objects.head("generations/a.wav")
    assert info.etag == etag
    assert info.size == 8
    assert info.content_type == "audio/wav"
    assert info.metadata == {"musicfn-writer": "musicfn", "musicfn-id": "x"}
    assert objects.get("generations/a.wav") == b"RIFF...."


def test_missing_object_and_bucket_errors(objects: ObjectStore, settings: Settings) -> None:
    with pytest.raises(ObjectNotFoundError, match="no such object"):
        objects.get("generations/missing.wav")
    with pytest.raises(ObjectNotFoundError):
        objects.head("generations/missing.wav")
    assert not objects.exists("generations/missing.wav")
    other = ObjectStore(settings, bucket="no-such-bucket-here")
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        other.get("x")


def test_wrong_credentials_are_access_denied(s3_server: EmbeddedS3, tmp_data: Path) -> None:
    bad = make_settings(s3_server, tmp_data, s3_secret_key="wrong-secret")
    with pytest.raises(AccessDeniedError):
        ObjectStore(bad).ensure_bucket()


def test_conditional_put_refuses_overwrite(objects: ObjectStore) -> None:
    objects.put("generations/once.json", b"1", content_type="application/json", if_absent=True)
    with pytest.raises(ObjectExistsError):
        objects.put("generations/once.json", b"2", content_type="application/json",
                    if_absent=True)
    assert objects.get("generations/once.json") == b"1"


def test_copy_and_delete(objects: ObjectStore) -> None:
    objects.put("a/src", b"data", content_type="text/plain", metadata={"k": "v"})
    objects.copy("a/src", "a/dst")
    assert objects.get("a/dst") == b"data"
    assert objects.head("a/dst").metadata == {"k": "v"}
    objects.delete("a/src")
    objects.delete("a/src")  # deleting a missing object is fine
    objects.delete_many(["a/dst", "a/never-existed"])
    assert list(objects.list("a/")) == []


def test_list_paginates(objects: ObjectStore) -> None:
    keys = [f"p/{i:04d}" for i in range(25)]
    for k in keys:
        objects.put(k, b"x", content_type="text/plain")
    listed = [o.key for o in objects.list("p/", page_size=7)]  # 4 pages
    assert listed == keys
    assert [o.key for o in objects.list("p/", start_after="p/0019")] == keys[20:]


def test_list_by_date_range(objects: ObjectStore) -> None:
    days = [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2),
            date(2026, 3, 1)]
    stored = {}
    for d in days:
        key = TrackKey.for_id("generations", new_id(datetime(d.year, d.month, d.day, 12,
                                                             tzinfo=UTC)))
        objects.put(key.audio_key, b"x", content_type="audio/wav")
        stored[d] = key.audio_key
    got = [o.key for o in objects.list_dates("generations", date(2026, 1, 31),
                                             date(2026, 2, 2))]
    assert got == [stored[date(2026, 1, 31)], stored[date(2026, 2, 1)], stored[date(2026, 2, 2)]]
    assert list(objects.list_dates("generations", date(2025, 1, 1), date(2025, 12, 31))) == []
    with pytest.raises(InvalidRequestError):
        list(objects.list_dates("generations", date(2026, 2, 2), date(2026, 1, 1)))


def test_presigned_url_allows_get_only(objects: ObjectStore) -> None:
    objects.put("generations/p.wav", b"original", content_type="audio/wav")
    url = objects.presign_get("generations/p.wav")
    assert "X-Amz-Expires=600" in url  # default expiry: 10 minutes
    assert _http(url) == (200, b"original")
    status, _ = _http(url, method="PUT", data=b"tampered")
    assert status == 403
    status, _ = _http(url, method="DELETE")
    assert status == 403
    assert objects.get("generations/p.wav") == b"original"


def test_presigned_url_expires(objects: ObjectStore) -> None:
    objects.put("generations/e.wav", b"x", content_type="audio/wav")
    url = objects.presign_get("generations/e.wav", expires_s=1)
    time.sleep(2.1)
    status, _ = _http(url)
    assert status == 403


@pytest.mark.parametrize("expiry", [0, -5, 3601, 86400])
def test_presign_expiry_bounds(objects: ObjectStore, expiry: int) -> None:
    with pytest.raises(InvalidRequestError):
        objects.presign_get("generations/x.wav", expires_s=expiry)


@pytest.mark.fault
def test_stopped_server_gives_unreachable_error_not_a_hang(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path / "s3")
    try:
        settings = make_settings(server, tmp_path)
        store = ObjectStore(settings)
        store.ensure_bucket()
        store.put("k", b"v", content_type="text/plain")
    finally:
        server.stop()
    started = time.monotonic()
    with pytest.raises(StorageUnreachableError) as err:
        store.get("k")
    assert server.endpoint_url in err.value.message
    assert err.value.retryable
    # Bounded by connect timeout x attempts, not a hang (generous guard, not a speed target).
    assert time.monotonic() - started < 30
    # Restarted on the same data: the object is still there.
    server.start()
    try:
        assert store.get("k") == b"v"
    finally:
        server.stop()


def test_get_many_keeps_order_and_reports_missing_keys(objects: ObjectStore) -> None:
    keys = [f"bulk/{i:03d}.json" for i in range(30)]
    for i, k in enumerate(keys):
        objects.put(k, f'{{"n": {i}}}'.encode(), content_type="application/json")
    wanted = [*keys[:10], "bulk/missing.json", *keys[10:]]
    results = list(objects.get_many(wanted, workers=4))
    assert results[10].__class__ is ObjectNotFoundError
    bodies = [r for i, r in enumerate(results) if i != 10]
    assert bodies == [f'{{"n": {i}}}'.encode() for i in range(30)]
