"""The storage CLI through the installed ``musicfn`` console script (real S3, real DuckDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.objects import ObjectStore
from storage.tracks import TrackStore
from tests.support import free_port_block, musicfn_env
from tests.support.tracks import make_track

MUSICFN = str(Path(sys.executable).parent / "musicfn")


def run(settings: Settings, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), **musicfn_env(settings)}
    return subprocess.run([MUSICFN, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)


@pytest.fixture
def stored(objects: ObjectStore, settings: Settings) -> list[str]:
    """Five tracks in the bucket (and none in the catalogue yet)."""
    store = TrackStore(objects, settings)
    now = datetime.now(UTC)
    ids = []
    for n in range(5):
        sc, audio = make_track(store, n, now - timedelta(days=10 * n))
        ids.append(store.write(sc, audio).id)
    return ids


@pytest.mark.ray
def test_run_once_generates_a_real_track(settings: Settings) -> None:
    """The README's first command: storage, Ray, Serve, one generation, printed."""
    port = free_port_block()
    out = run(settings, "run", "--once", env={"MUSICFN_HTTP_PORT": str(port)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedded S3 reused" in out.stdout
    assert "synth engine on cpu: no CUDA GPU on this machine" in out.stdout
    assert f"object:    s3://{settings.bucket}/generations/" in out.stdout
    assert "BPM" in out.stdout and '"status": "completed"' in out.stdout
    stats = json.loads(run(settings, "stats", "--json").stdout)
    assert stats["counts_by_status"] == {"completed": 1}


def test_reindex_ls_stats_cleanup(settings: Settings, stored: list[str]) -> None:
    out = run(settings, "reindex", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["upserted"] == 5

    out = run(settings, "ls", "--json", "--bpm-min", "101", "--bpm-max", "103")
    assert out.returncode == 0, out.stderr
    assert [t["id"] for t in json.loads(out.stdout)["items"]] == stored[1:4]

    out = run(settings, "ls", "--limit", "2")
    assert out.returncode == 0 and stored[0] in out.stdout and "more: --cursor" in out.stdout

    stats = json.loads(run(settings, "stats", "--json").stdout)
    assert stats["counts_by_status"] == {"completed": 5}

    out = run(settings, "cleanup", "--older-than", "25d", "--dry-run")
    assert out.returncode == 0 and "would remove 2 track(s)" in out.stdout
    out = run(settings, "cleanup", "--older-than", "25d", "--json")
    assert json.loads(out.stdout)["tracks"] == sorted(stored[3:])
    assert json.loads(run(settings, "stats", "--json").stdout)["total_tracks"] == 3


@pytest.mark.parametrize("args", [
    ("ls", "--bpm-min", "130", "--bpm-max", "100"),
    ("ls", "--key", "H"),
    ("ls", "--since", "yesterday"),
    ("ls", "--cursor", "not-a-cursor"),
    ("cleanup", "--older-than", "soon"),
    ("cleanup",),
    ("no-such-command",),
])
def test_bad_input_is_one_line_and_nonzero(settings: Settings, args: tuple[str, ...]) -> None:
    out = run(settings, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("musicfn: error:")
    assert "Traceback" not in out.stderr


def test_locked_catalogue_is_one_clear_line(settings: Settings) -> None:
    holder = Catalogue(settings.catalogue_file)
    try:
        out = run(settings, "ls")
    finally:
        holder.close()
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert str(settings.catalogue_file) in out.stderr and "locked" in out.stderr
