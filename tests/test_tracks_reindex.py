"""Tracks in the bucket: commit order, reindex equality, orphans and retention (real S3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from musicfn.errors import InvalidRequestError, StorageUnreachableError
from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.keys import TrackKey, new_id
from storage.objects import ObjectStore
from storage.reindex import cleanup_older_than, cleanup_orphans, reindex, scan_bucket
from storage.sidecar import Sidecar
from storage.tracks import TrackStore, written_by_musicfn
from tests.support import make_settings, start_s3_server
from tests.support.tracks import make_track


@pytest.fixture
def store(objects: ObjectStore, settings: Settings) -> TrackStore:
    return TrackStore(objects, settings)


def test_write_puts_audio_then_sidecar_with_marker(store: TrackStore) -> None:
    sc, audio = make_track(store, 1, datetime.now(UTC))
    stored = store.write(sc, audio)
    key = store.key_for(stored)
    assert store.read_audio(key) == audio
    assert store.read_sidecar(key) == stored
    assert stored.audio is not None and stored.audio.etag
    assert written_by_musicfn(store.objects.head(key.audio_key).metadata)
    assert written_by_musicfn(store.objects.head(key.sidecar_key).metadata)
    assert store.objects.head(key.audio_key).content_type == "audio/wav"


def test_write_refuses_mismatched_audio(store: TrackStore) -> None:
    sc, audio = make_track(store, 2, datetime.now(UTC))
    with pytest.raises(InvalidRequestError, match="do not match"):
        store.write(sc, audio + b"x")
    assert list(store.objects.list("generations/")) == []


@pytest.mark.fault
def test_s3_down_between_audio_and_sidecar_leaves_only_an_orphan(tmp_path: Path) -> None:
    """The server stops after the audio PUT: the write fails, the track is never committed,
    and after a restart reindex reports the orphan audio and cleanup removes it."""
    server = start_s3_server(tmp_path / "s3")
    try:
        settings = make_settings(server, tmp_path)

        class StopsBeforeSidecar(ObjectStore):
            def put(self, key: str, body: bytes, **kw: Any) -> str:
                if key.endswith(".json"):
                    server.stop()
                return super().put(key, body, **kw)

        objects = StopsBeforeSidecar(settings)
        objects.ensure_bucket()
        store = TrackStore(objects, settings)
        sc, audio = make_track(store, 3, datetime.now(UTC))
        with pytest.raises(StorageUnreachableError):
            store.write(sc, audio)
        server.start()
        cat = Catalogue(tmp_path / "c.duckdb")
        report = reindex(objects, cat, settings)
        assert cat.ids() == set()  # never committed: no sidecar, no row
        assert report.orphan_audio == [store.key_for(sc).audio_key]
        removed = cleanup_orphans(objects, settings, grace=timedelta(0),
                                  now=datetime.now(UTC) + timedelta(seconds=5))
        assert removed == report.orphan_audio
        assert list(objects.list("generations/")) == []
        cat.close()
    finally:
        server.stop()


def test_reindex_after_deleting_the_catalogue_gives_identical_rows(
        store: TrackStore, settings: Settings, tmp_data: Path) -> None:
    path = tmp_data / "online.duckdb"
    online = Catalogue(path)
    base = datetime(2026, 10, 30, 22, tzinfo=UTC)
    for n in range(40):
        sc, audio = make_track(store, n, base + timedelta(hours=3 * n),
                               prefix="processed" if n % 5 == 0 else "generations")
        online.record_prompts([sc.prompt or ""], at=sc.created_at)
        online.upsert([store.write(sc, audio)])
    before_rows = online.rows()
    before_stats = online.stats()
    online.close()
    path.unlink()

    rebuilt = Catalogue(path)
    report = reindex(store.objects, rebuilt, settings)
    assert report.sidecars == 40 and report.upserted == 40
    assert report.orphan_audio == [] and report.invalid_sidecars == []
    assert sorted(rebuilt.rows()) == sorted(before_rows)
    assert rebuilt.stats() == before_stats
    rebuilt.close()


def test_reindex_reports_orphans_and_bad_objects(store: TrackStore, settings: Settings,
                                                 tmp_data: Path) -> None:
    now = datetime.now(UTC)
    good, audio = make_track(store, 1, now)
    store.write(good, audio)
    orphan = TrackKey.for_id("generations", new_id())
    store.objects.put(orphan.audio_key, b"audio without sidecar", content_type="audio/wav")
    dangling = TrackKey.for_id("generations", new_id())
    store.objects.put(dangling.sidecar_key, good.to_json(), content_type="application/json")
    broken = TrackKey.for_id("generations", new_id())
    store.objects.put(broken.audio_key, b"a", content_type="audio/wav")
    store.objects.put(broken.sidecar_key, b"{not json", content_type="application/json")
    store.objects.put("generations/notes.txt", b"?", content_type="text/plain")

    cat = Catalogue(tmp_data / "c.duckdb")
    report = reindex(store.objects, cat, settings)
    assert cat.ids() == {good.id}
    assert report.orphan_audio == [orphan.audio_key]
    assert report.dangling_sidecars == [dangling.sidecar_key]
    assert report.invalid_sidecars == [broken.sidecar_key]
    assert report.invalid_keys == ["generations/notes.txt"]

    # Orphans younger than the grace period are left alone (a write may be in flight).
    assert cleanup_orphans(store.objects, settings, grace=timedelta(hours=1)) == []
    removed = cleanup_orphans(store.objects, settings, grace=timedelta(0),
                              now=now + timedelta(seconds=5))
    assert removed == [orphan.audio_key]
    assert not store.objects.exists(orphan.audio_key)
    assert store.objects.exists(store.key_for(good).audio_key)
    cat.close()


def test_reindex_prunes_rows_of_deleted_tracks(store: TrackStore, settings: Settings,
                                               tmp_data: Path) -> None:
    cat = Catalogue(tmp_data / "c.duckdb")
    a, audio_a = make_track(store, 1, datetime.now(UTC))
    b, audio_b = make_track(store, 2, datetime.now(UTC))
    pending = Sidecar(id=new_id(), kind="generation", status="pending",
                      created_at=datetime.now(UTC), prompt="in flight")
    cat.upsert([store.write(a, audio_a), store.write(b, audio_b), pending])
    store.delete(store.key_for(b))
    report = reindex(store.objects, cat, settings)
    assert report.pruned == 1
    assert cat.ids() == {a.id, pending.id}  # in-flight jobs are not pruned
    cat.close()


def test_cleanup_older_than(store: TrackStore, settings: Settings, tmp_data: Path) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    cat = Catalogue(tmp_data / "c.duckdb")
    old = [make_track(store, n, now - timedelta(days=40 + n)) for n in range(3)]
    new = [make_track(store, n, now - timedelta(days=n)) for n in range(3)]
    for sc, audio in old + new:
        cat.upsert([store.write(sc, audio)])
    failed_old = Sidecar(id=new_id(now - timedelta(days=60)), kind="generation",
                         status="failed", created_at=now - timedelta(days=60))
    cat.upsert([failed_old])

    dry = cleanup_older_than(store.objects, cat, settings, timedelta(days=30), dry_run=True,
                             now=now)
    assert sorted(dry.tracks) == sorted(sc.id for sc, _ in old)
    assert dry.rows == 4 and len(cat.ids()) == 7  # nothing removed on a dry run
    report = cleanup_older_than(store.objects, cat, settings, timedelta(days=30), now=now)
    assert report.rows == 4
    assert cat.ids() == {sc.id for sc, _ in new}
    assert set(scan_bucket(store.objects, settings).tracks) == {sc.id for sc, _ in new}
    cat.close()
