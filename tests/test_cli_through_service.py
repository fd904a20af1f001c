"""Every catalogue command works with the service stopped (the DuckDB file) and running (the
service's catalogue owner actor holds the file: the CLI goes through it), without the user
choosing: ``musicfn_cli.commands.catalogue_access``.

The running case starts the real service (``musicfn run``, its own Ray cluster with token
auth, Serve, one example generation) in a subprocess, then runs the commands as subprocesses
with neither ``RAY_ADDRESS`` nor ``RAY_AUTH_MODE`` set: the CLI finds the service's cluster
from the catalogue's lock holder (other Ray clusters may run on the machine) and handles the
token itself.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from musicfn.settings import Settings
from musicfn_cli.commands.catalogue_access import OwnerCatalogue
from musicfn_cli.commands.ray_session import catalogue_holder, ray_address_of
from storage.catalogue.store import Catalogue
from storage.dlq import DeadLetter, DeadLetterQueue
from storage.objects import ObjectStore
from storage.sidecar import ErrorInfo
from storage.tracks import TrackStore
from tests.support import free_port_block, musicfn_env
from tests.support.tracks import make_track

MUSICFN = str(Path(sys.executable).parent / "musicfn")
SERVICE_START_S = 900.0  # a generous bound on a loaded 2-core box; not a timing assertion


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A shell's environment: this test's S3, bucket and data dir; no Ray variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MUSICFN_", "RAY_ADDRESS", "RAY_AUTH_MODE"))}
    env.update(musicfn_env(settings), **extra)
    return env


def musicfn(settings: Settings, *args: str,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUSICFN, *args], capture_output=True, text=True,
                          env=cli_env(settings), timeout=timeout, check=False)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def check_catalogue_commands(settings: Settings, track_id: str, source: str) -> None:
    """ls, stats, verify, cleanup (dry run), reindex and events all succeed and show
    ``track_id``; verify says it read the catalogue via ``source``."""
    items = json.loads(ok(musicfn(settings, "ls", "--json")))["items"]
    assert [t["id"] for t in items] == [track_id]
    assert "tracks: 1 (completed 1)" in ok(musicfn(settings, "stats"))

    out = ok(musicfn(settings, "verify", "--grace", "0"))
    assert f"via the {source}" in out and "OK: catalogue and bucket agree" in out, out

    assert "would remove 0 track(s)" in ok(musicfn(settings, "cleanup", "--older-than", "1d",
                                                   "--dry-run"))
    report = json.loads(ok(musicfn(settings, "reindex", "--json")))
    assert (report["sidecars"], report["upserted"], report["pruned"]) == (1, 1, 0)
    assert ok(musicfn(settings, "ls")).count(track_id) == 1  # still there, once

    assert "no dead letters" in ok(musicfn(settings, "events", "ls"))
    assert "nothing to replay" in ok(musicfn(settings, "events", "replay", "--all"))


def check_replay(settings: Settings, objects: ObjectStore) -> None:
    """``events ls`` shows a dead letter and ``events replay`` re-drives it: a job on the
    service's queue (``ray_session.connect`` attaches to the service's cluster, whose owner
    holds the catalogue). Its object is gone, so the replay ends ``gone`` and the letter goes."""
    letter = DeadLetter.new(bucket=settings.bucket, key=f"{settings.incoming_prefix}/gone.wav",
                            etag="0" * 32, source="test",
                            error=ErrorInfo(code="unreadable_audio", message="test letter"),
                            attempts=3, version_id="")
    dlq = DeadLetterQueue(objects, settings)
    dlq.put(letter)
    assert letter.id in ok(musicfn(settings, "events", "ls"))
    out = ok(musicfn(settings, "events", "replay", "--id", letter.id))
    assert f"{letter.id}  {letter.key}: gone" in out, out
    assert list(dlq.list()) == []


def test_catalogue_commands_on_the_file_when_the_service_is_stopped(
        settings: Settings, objects: ObjectStore) -> None:
    sc, audio = make_track(TrackStore(objects, settings), 1, datetime.now(UTC)
                           - timedelta(hours=2))
    TrackStore(objects, settings).write(sc, audio)
    assert json.loads(ok(musicfn(settings, "reindex", "--json")))["upserted"] == 1
    check_catalogue_commands(settings, sc.id, f"file {settings.catalogue_file}")
    assert catalogue_holder(settings.catalogue_file) is None  # every command let go of it


def test_a_lock_holder_that_is_no_service_is_one_clear_line(settings: Settings) -> None:
    """Not a Ray worker: no cluster is searched, the lock error stands, naming file and PID."""
    holder = Catalogue(settings.catalogue_file)
    try:
        assert ray_address_of(os.getpid()) is None
        out = musicfn(settings, "stats", timeout=60)
    finally:
        holder.close()
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"PID {os.getpid()}" in out.stderr and "[catalogue_locked]" in out.stderr


class Service:
    """``musicfn run`` in a subprocess (its own session), its stdout read on a thread."""

    def __init__(self, settings: Settings) -> None:
        env = cli_env(settings, MUSICFN_HTTP_PORT=str(free_port_block()))
        self.proc = subprocess.Popen([MUSICFN, "run", "--engine", "synth"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float) -> str:
        """The output up to the first line containing ``marker``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no {marker!r} from musicfn run:\n" + "".join(self.output))
            if line is None:
                pytest.fail(f"musicfn run ended ({self.proc.wait()}):\n" + "".join(self.output))
            self.output.append(line)
            if marker in line:
                return "".join(self.output)

    def stop(self) -> None:
        """SIGTERM (the service stops Serve and its Ray cluster), then SIGKILL its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


@pytest.fixture
def service(settings: Settings, objects: ObjectStore) -> Iterator[Service]:
    svc = Service(settings)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.mark.ray
def test_catalogue_commands_through_the_running_service(settings: Settings,
                                                        objects: ObjectStore,
                                                        service: Service) -> None:
    out = service.wait_for("musicfn serving on", SERVICE_START_S)
    generated = [line.split()[1] for line in out.splitlines() if line.startswith("generated ")]
    assert len(generated) == 1, out
    holder = catalogue_holder(settings.catalogue_file)
    assert holder is not None and ray_address_of(holder) is not None, \
        "the service's owner actor (a Ray worker) holds the catalogue"
    check_catalogue_commands(settings, generated[0], "owner actor")
    check_replay(settings, objects)
    service.stop()
    assert service.proc.returncode == 0, "".join(service.output)[-3000:]


@pytest.mark.ray
def test_reindex_through_the_owner_never_prunes_a_track_completed_meanwhile(
        ray_cluster: Any, settings: Settings, objects: ObjectStore) -> None:
    """The service keeps committing while reindex lists the bucket: ``prune_completed``
    through the owner deletes only rows completed before the client was opened."""
    import ray

    from storage.catalogue.actor import OwnerClient, catalogue_actor

    store = TrackStore(objects, settings)
    handle = catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace,
                             watch_interval_s=0)
    try:
        old, _ = make_track(store, 1, datetime.now(UTC) - timedelta(hours=1))
        owner = OwnerCatalogue(OwnerClient(handle))
        new, _ = make_track(store, 2, datetime.now(UTC) + timedelta(seconds=1))
        ray.get(handle.upsert.remote([old, new]))
        assert owner.prune_completed(keep_ids=set()) == 1
        assert [sc.id for sc in owner.list_tracks().items] == [new.id]
    finally:
        ray.kill(handle)
