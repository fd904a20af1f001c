"""The incoming/ poller: uploads with no event are processed once, from a durable cursor.

Real SeaweedFS, the real catalogue owner actor, real Ray tasks; the restart test SIGKILLs a
running ``musicfn watch`` process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from jobs.service import build_runner, outcome_counts, run_until_done
from jobs.uploads import EventHandler
from musicfn.settings import Settings
from storage.catalogue.actor import catalogue_actor
from storage.catalogue.client import CatalogueClient
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from storage.sidecar import Sidecar
from tests.support import cli_env, make_settings
from tests.support.app import deployed_app
from tests.support.events import wait_for, wav_bytes
from triggers.poller import Poller

pytestmark = [pytest.mark.ray]


class PollAndRun:
    """A poll (which only enqueues event jobs), then a local runner until those jobs end."""

    def __init__(self, objects: ObjectStore, owner: Any, settings: Settings) -> None:
        self.runner = build_runner(settings, CatalogueClient(owner), None)
        self.poller = Poller(self.runner.queue, objects, settings)

    async def poll_once(self, full: bool = False) -> Any:
        report = await self.poller.poll_once(full=full)
        jobs = await run_until_done(self.runner, report.job_ids) if report.job_ids else []
        return SimpleNamespace(listed=report.listed, known=report.known, cursor=report.cursor,
                               outcomes=outcome_counts(jobs))


@pytest.fixture
def poller_env(ray_cluster: Any, s3_server: EmbeddedS3, tmp_path: Path) -> Iterator[Any]:
    import ray

    settings = make_settings(s3_server, tmp_path, ray_namespace=f"p-{uuid.uuid4().hex[:8]}")
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    owner = catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace)
    poller = PollAndRun(objects, owner, settings)
    yield settings, objects, owner, poller
    ray.kill(owner)


def _sources(owner: Any, objects: ObjectStore) -> dict[str, list[str]]:
    """source key -> processed track ids (from the catalogue), checking the bucket agrees."""
    import ray

    rows: list[Sidecar] = []
    for key in {o.key for o in objects.list("incoming/")}:
        rows.extend(ray.get(owner.tracks_by_source.remote(key)))
    out: dict[str, list[str]] = {}
    for sc in rows:
        assert sc.source is not None and sc.audio_key is not None
        assert objects.exists(sc.audio_key)
        out.setdefault(sc.source.key, []).append(sc.id)
    return out


def test_poll_processes_uploads_without_events_once(poller_env: Any) -> None:
    _, objects, owner, poller = poller_env
    keys = [f"incoming/day1/take-{i}.wav" for i in range(3)]
    for i, key in enumerate(keys):
        objects.put(key, wav_bytes(seed=i), content_type="audio/wav")
    objects.put("incoming/day1/readme.txt", b"hello", content_type="text/plain")
    first = asyncio.run(poller.poll_once())
    assert first.outcomes == {"processed": 3, "rejected": 1}
    assert first.cursor == "incoming/day1/take-2.wav"
    again = asyncio.run(poller.poll_once())
    assert again.listed == 0 and again.outcomes == {}
    full = asyncio.run(poller.poll_once(full=True))
    assert full.listed == 4 and full.known == 4 and full.outcomes == {}
    assert {k: len(v) for k, v in _sources(owner, objects).items()} == dict.fromkeys(keys, 1)


def test_reconciliation_finds_keys_behind_the_cursor(poller_env: Any) -> None:
    _, objects, owner, poller = poller_env
    objects.put("incoming/zz.wav", wav_bytes(), content_type="audio/wav")
    assert asyncio.run(poller.poll_once()).outcomes == {"processed": 1}
    objects.put("incoming/aa.wav", wav_bytes(seed=3), content_type="audio/wav")
    assert asyncio.run(poller.poll_once()).outcomes == {}  # sorts before the cursor
    assert asyncio.run(poller.poll_once(full=True)).outcomes == {"processed": 1}
    # A re-upload (new etag) under a processed key is a new version: processed again.
    objects.put("incoming/zz.wav", wav_bytes(seed=9), content_type="audio/wav")
    assert asyncio.run(poller.poll_once(full=True)).outcomes == {"processed": 1}
    assert sorted(len(v) for v in _sources(owner, objects).values()) == [1, 2]


@pytest.mark.fault
def test_watch_killed_mid_way_resumes_without_duplicates(poller_env: Any,
                                                        ray_cluster: Any) -> None:
    settings, objects, owner, _ = poller_env
    # Enough uploads that killing the watcher at its first finished batch (small uploads share
    # Ray tasks, up to 8 each) leaves most of them undone.
    keys = [f"incoming/burst/{i:02d}.wav" for i in range(32)]
    for i, key in enumerate(keys):
        objects.put(key, wav_bytes(seconds=0.5, seed=i), content_type="audio/wav")
    cmd = [sys.executable, "-m", "musicfn_cli.main", "watch", "--interval", "0.5"]
    watch = subprocess.Popen(cmd, env=cli_env(settings, ray_cluster),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_sources(owner, objects)) >= 1, timeout=240, every=0.05,
                 what="the first tracks from musicfn watch")
    finally:
        os.kill(watch.pid, signal.SIGKILL)
        watch.wait()
    done_before = _sources(owner, objects)
    assert len(done_before) < len(keys)  # killed mid-way
    # Restart: the killed process's jobs are re-driven once their leases expire (short here).
    rerun = subprocess.run([*cmd[:-2], "--once", "--json"],
                           env=cli_env(settings, ray_cluster, MUSICFN_JOB_LEASE_S="2"),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = _sources(owner, objects)
    assert sorted(after) == keys
    assert all(len(ids) == 1 for ids in after.values())
    for key, ids in done_before.items():
        assert after[key] == ids  # nothing processed twice


@pytest.fixture(scope="module")
def polled_app(serve_url: str, s3_server: EmbeddedS3,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client,
                                                                           Settings]]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("polled"), poller="on",
                             poll_interval_s=0.5, ray_namespace="polled-app")
    with deployed_app(settings, "polled", "/v-polled") as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings


def test_service_poller_processes_an_upload(polled_app: tuple[httpx.Client, Settings]) -> None:
    api, settings = polled_app
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    objects.put("incoming/dropped.wav", wav_bytes(), content_type="audio/wav")

    def uploads() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = api.get("/v1/generations",
                                              params={"kind": "upload"}).json()["items"]
        return [t for t in items if t["status"] == "completed"] or None

    [track] = wait_for(uploads, what="the service poller's track")
    assert track["audio_key"].startswith("processed/")
    status = api.get("/v1/events/poller").json()
    assert status["enabled"] is True and status["polls"] >= 1


def test_rebuilt_catalogue_does_not_process_sources_again(poller_env: Any) -> None:
    import ray

    from storage.catalogue.store import Catalogue
    from storage.reindex import reindex

    settings, objects, owner, poller = poller_env
    objects.put("incoming/once.wav", wav_bytes(), content_type="audio/wav")
    assert asyncio.run(poller.poll_once()).outcomes == {"processed": 1}
    ray.kill(owner, no_restart=True)
    wait_for(lambda: _released(settings), what="the owner to let go of the file")
    settings.catalogue_file.unlink()
    rebuilt = Catalogue(settings.catalogue_file)
    reindex(objects, rebuilt, settings)
    rebuilt.close()
    fresh = catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace)
    report = asyncio.run(PollAndRun(objects, fresh, settings).poll_once(full=True))
    assert report.listed == 1 and report.known == 1 and report.outcomes == {}
    assert len(_sources(fresh, objects)["incoming/once.wav"]) == 1
    ray.kill(fresh)


def _released(settings: Settings) -> bool:
    from musicfn.errors import CatalogueLockedError
    from storage.catalogue.store import Catalogue

    try:
        Catalogue(settings.catalogue_file).close()
    except CatalogueLockedError:
        return False
    return True


def test_removed_source_with_delete_policy_removes_the_processed_copy(poller_env: Any) -> None:
    import ray

    from jobs.model import ObjectEvent

    settings, objects, owner, poller = poller_env
    objects.put("incoming/temp.wav", wav_bytes(), content_type="audio/wav")
    assert asyncio.run(poller.poll_once()).outcomes == {"processed": 1}
    [track_id] = _sources(owner, objects)["incoming/temp.wav"]
    track = ray.get(owner.get.remote(track_id))
    deleting = EventHandler(objects, CatalogueClient(owner), settings.model_copy(
        update={"source_removed": "delete"}))
    removed = ObjectEvent(kind="removed", bucket=settings.bucket, key="incoming/temp.wav",
                          source="webhook")
    # The event is a hint: while the object still exists nothing is removed.
    assert asyncio.run(deleting.handle(removed)).outcome == "duplicate"
    objects.delete("incoming/temp.wav")
    assert asyncio.run(deleting.handle(removed)).outcome == "removed"
    assert ray.get(owner.get.remote(track_id)) is None
    assert not objects.exists(track.audio_key)
    assert not objects.exists(track.audio_key.replace(".wav", ".json"))
