"""``musicfn verify``: the bucket against the catalogue (real SeaweedFS, real DuckDB, real Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.keys import TrackKey, new_id
from storage.objects import ObjectStore
from storage.sidecar import ErrorInfo, Sidecar
from storage.tracks import TrackStore
from storage.verify import verify
from tests.support import musicfn_env
from tests.support.tracks import make_track

MUSICFN = str(Path(sys.executable).parent / "musicfn")
OLD = datetime.now(UTC) - timedelta(days=2)  # older than any grace period used here


def run(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **musicfn_env(settings)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([MUSICFN, "verify", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


@pytest.fixture
def store(objects: ObjectStore, settings: Settings) -> TrackStore:
    return TrackStore(objects, settings)


def committed(store: TrackStore, n: int, when: datetime = OLD) -> Sidecar:
    sc, audio = make_track(store, n, when)
    return store.write(sc, audio)


def job(status: str) -> Sidecar:
    return Sidecar(id=new_id(OLD), kind="generation", status=status,  # type: ignore[arg-type]
                   created_at=OLD, prompt=f"a {status} job",
                   error=ErrorInfo(code="engine_error", message="x", stage="generate")
                   if status == "failed" else None)


def kinds(problems: list[Any]) -> set[tuple[str, str | None]]:
    return {(p.kind, p.id) for p in problems}


def test_agreeing_bucket_and_catalogue_verify_clean(store: TrackStore, settings: Settings,
                                                    tmp_data: Path) -> None:
    cat = Catalogue(settings.catalogue_file)
    tracks = [committed(store, n) for n in range(5)]
    cat.upsert([*tracks, job("pending"), job("processing"), job("failed")])
    report = verify(store.objects, cat, settings, deep=True)
    assert report.ok, report.problems
    assert (report.tracks, report.rows, report.completed_rows) == (5, 8, 5)
    cat.close()
    out = run(settings, "--catalogue", "file", "--grace", "0")
    assert out.returncode == 0, out.stderr
    assert "verified 5 tracks" in out.stdout and "OK: catalogue and bucket agree" in out.stdout


def test_every_kind_of_problem_is_found(store: TrackStore, settings: Settings) -> None:
    cat = Catalogue(settings.catalogue_file)
    good = committed(store, 0)
    cat.upsert([good])
    # Bucket side.
    orphan = TrackKey.for_id("generations", new_id(OLD))
    store.objects.put(orphan.audio_key, b"audio, never committed", content_type="audio/wav")
    dangling = committed(store, 1)
    cat.upsert([dangling])
    store.objects.delete(store.key_for(dangling).audio_key)
    resized = committed(store, 2)
    cat.upsert([resized])
    store.objects.put(store.key_for(resized).audio_key, b"other bytes", content_type="audio/wav")
    broken = TrackKey.for_id("generations", new_id(OLD))
    store.objects.put(broken.audio_key, b"a", content_type="audio/wav")
    store.objects.put(broken.sidecar_key, b"{not json", content_type="application/json")
    store.objects.put("generations/notes.txt", b"?", content_type="text/plain")
    # Catalogue side.
    unindexed = committed(store, 3)
    stale = committed(store, 4)
    cat.upsert([stale.model_copy(update={"status": "processing"})])  # row behind the bucket
    edited = committed(store, 5)
    cat.upsert([edited.model_copy(update={"prompt": "edited after the fact"})])
    lost = committed(store, 6)
    cat.upsert([lost])
    store.delete(store.key_for(lost))

    report = verify(store.objects, cat, settings)
    assert not report.ok
    assert kinds(report.problems) == {
        ("orphan_audio", orphan.id),
        ("dangling_sidecar", dangling.id),
        ("row_without_objects", dangling.id),  # its track is no longer committed
        ("audio_mismatch", resized.id),
        ("invalid_sidecar", broken.id),
        ("invalid_key", None),
        ("missing_row", unindexed.id),
        ("row_mismatch", stale.id),
        ("row_mismatch", edited.id),
        ("row_without_objects", lost.id),
    }
    detail = {(p.kind, p.id): p.detail for p in report.problems}
    assert detail[("row_mismatch", stale.id)] == "row status processing, sidecar completed"
    assert detail[("row_mismatch", edited.id)].endswith("in: prompt")
    assert "size 11 != sidecar" in detail[("audio_mismatch", resized.id)]
    assert report.counts()["row_without_objects"] == 2
    cat.close()

    out = run(settings, "--catalogue", "file", "--grace", "0", "--json")
    assert out.returncode == 1, out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] is False and body["counts"]["orphan_audio"] == 1
    assert {(p["kind"], p["id"]) for p in body["problems"]} == kinds(report.problems)
    text = run(settings, "--catalogue", "file", "--grace", "0")
    assert text.returncode == 1
    assert "orphan_audio: 1" in text.stdout and f"PROBLEMS: {len(report.problems)}" in text.stdout


def test_deep_finds_audio_that_only_its_hash_gives_away(store: TrackStore,
                                                        settings: Settings) -> None:
    cat = Catalogue(settings.catalogue_file)
    sc = committed(store, 7)
    assert sc.audio is not None
    wrong = sc.model_copy(update={"audio": sc.audio.model_copy(update={"sha256": "0" * 64})})
    store.objects.put(store.key_for(sc).sidecar_key, wrong.to_json(),
                      content_type="application/json")
    cat.upsert([wrong])
    assert verify(store.objects, cat, settings).ok  # size and ETag agree
    deep = verify(store.objects, cat, settings, deep=True)
    assert kinds(deep.problems) == {("audio_mismatch", sc.id)}
    assert "sha256" in deep.problems[0].detail
    cat.close()


def test_grace_period_sets_writes_in_flight_apart(store: TrackStore, settings: Settings) -> None:
    cat = Catalogue(settings.catalogue_file)
    fresh = TrackKey.for_id("generations", new_id())
    store.objects.put(fresh.audio_key, b"sidecar on its way", content_type="audio/wav")
    report = verify(store.objects, cat, settings, grace=timedelta(hours=1))
    assert report.ok and kinds(report.recent) == {("orphan_audio", fresh.id)}
    strict = verify(store.objects, cat, settings)
    assert kinds(strict.problems) == {("orphan_audio", fresh.id)}
    cat.close()
    assert run(settings, "--catalogue", "file", "--grace", "1h").returncode == 0
    assert run(settings, "--catalogue", "file", "--grace", "0s").returncode == 1


def test_bad_input_exits_2_with_one_line(settings: Settings) -> None:
    out = run(settings, "--grace", "soon")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "invalid duration" in out.stderr
    out = run(settings, "--catalogue", "nowhere")
    assert out.returncode == 2 and out.stderr.count("\n") == 1


@pytest.mark.ray
def test_verify_goes_through_the_running_owner(ray_cluster: Any, store: TrackStore,
                                               settings: Settings) -> None:
    """While an owner actor holds the file, the CLI cannot open it: verify asks the owner."""
    import ray

    from storage.catalogue.actor import catalogue_actor

    owner = catalogue_actor(settings.catalogue_file, watch_interval_s=0)
    try:
        tracks = [committed(store, n) for n in range(3)]
        ray.get(owner.upsert.remote(tracks))
        address = ray_cluster.address_info["gcs_address"]
        out = run(settings, "--ray-address", address, "--grace", "0")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "via the owner actor" in out.stdout and "verified 3 tracks" in out.stdout
        locked = run(settings, "--catalogue", "file")
        assert locked.returncode == 1 and locked.stderr.count("\n") == 1
        assert "catalogue_locked" in locked.stderr
        store.delete(store.key_for(tracks[0]))
        out = run(settings, "--ray-address", address, "--grace", "0", "--json")
        assert out.returncode == 1
        assert json.loads(out.stdout)["counts"] == {"row_without_objects": 1}
    finally:
        ray.kill(owner)


def test_owner_required_but_no_cluster_is_one_line(settings: Settings) -> None:
    out = run(settings, "--catalogue", "owner", "--ray-address", "127.0.0.1:1")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "catalogue_owner_unreachable" in out.stderr
