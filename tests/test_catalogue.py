"""The DuckDB catalogue: upserts, lifecycle, queries, locking and crash durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from musicfn.errors import (
    CatalogueError,
    ConflictError,
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
)
from storage.catalogue.events import EventRecord
from storage.catalogue.queries import TrackQuery, encode_cursor
from storage.catalogue.schema import SCHEMA_VERSION
from storage.catalogue.store import Catalogue
from storage.keys import new_id
from storage.sidecar import AudioFacts, ErrorInfo, Sidecar, Summary

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def track(n: int = 0, *, status: str = "completed", bpm: float | None = 120.0, key: str = "C",
          mode: str = "major", lufs: float = -16.0, prompt: str = "lofi beat",
          when: datetime | None = None, engine: str = "synth") -> Sidecar:
    created = when or T0 + timedelta(hours=n)
    audio = AudioFacts(format="wav", subtype="PCM_16", sample_rate=32000, channels=2,
                       bit_depth=16, frames=32000 * 8, duration_s=8.0, bytes=1000 + n,
                       sha256="0" * 64) if status == "completed" else None
    return Sidecar.model_validate({
        "id": new_id(created), "kind": "generation", "status": status, "created_at": created,
        "completed_at": created + timedelta(seconds=9) if status == "completed" else None,
        "prompt": prompt, "engine": engine, "model": "synth-v1", "seed": n, "audio": audio,
        "summary": Summary(bpm=bpm, key=key, mode=mode, lufs=lufs),  # type: ignore[arg-type]
    })


@pytest.fixture
def cat(tmp_data: Path) -> Catalogue:
    c = Catalogue(tmp_data / "catalogue.duckdb")
    yield c  # type: ignore[misc]
    c.close()


def test_fresh_file_is_migrated_and_reopens(tmp_data: Path) -> None:
    path = tmp_data / "c.duckdb"
    c = Catalogue(path)
    assert c.schema_version() == SCHEMA_VERSION
    c.upsert([track()])
    c.close()
    c2 = Catalogue(path)  # migrations are not re-applied
    assert c2.schema_version() == SCHEMA_VERSION
    assert c2.count() == 1
    c2.close()


def test_upsert_is_idempotent(cat: Catalogue) -> None:
    rows = [track(i) for i in range(50)]
    assert cat.upsert(rows) == 50
    before = cat.rows()
    assert cat.upsert(rows) == 50
    assert cat.upsert(rows + rows) == 50  # duplicates inside one batch collapse
    assert cat.rows() == before
    assert cat.get(rows[7].id) == rows[7]


def test_upsert_never_moves_a_row_back(cat: Catalogue) -> None:
    done = track(1)
    cat.upsert([done])
    stale = done.model_copy(update={"status": "processing", "audio": None})
    cat.upsert([stale])
    got = cat.get(done.id)
    assert got is not None and got.status == "completed" and got.audio is not None


def test_lifecycle_transitions(cat: Catalogue) -> None:
    job = track(2, status="pending")
    cat.upsert([job])
    assert cat.transition(job.id, "processing").status == "processing"
    err = ErrorInfo(code="engine_error", message="boom", stage="generate")
    failed = cat.transition(job.id, "failed", error=err)
    assert failed.error == err
    assert cat.get(job.id) == failed
    assert cat.transition(job.id, "processing").status == "processing"  # a retry
    finished = track(2).model_copy(update={"id": job.id})
    cat.complete(finished)
    assert cat.get(job.id) == finished
    with pytest.raises(InvalidTransitionError):
        cat.transition(job.id, "processing")
    with pytest.raises(InvalidTransitionError):
        cat.transition(job.id, "failed", error=err)
    with pytest.raises(NotFoundError):
        cat.transition(new_id(), "processing")
    pending = track(3, status="pending")
    cat.upsert([pending])
    with pytest.raises(InvalidTransitionError):
        cat.complete(track(3).model_copy(update={"id": pending.id}))


def test_filters(cat: Catalogue) -> None:
    rows = [
        track(0, bpm=90, key="A", mode="minor", lufs=-14, prompt="dark Techno loop"),
        track(1, bpm=120, key="C", mode="major", lufs=-16, prompt="happy piano"),
        track(2, bpm=128, key="C", mode="major", lufs=-9, prompt="techno banger"),
        track(3, bpm=None, key="D", mode="minor", lufs=-23, prompt="ambient pad"),
        track(4, status="failed", bpm=None, prompt="techno fail"),
        track(5, engine="audiocraft", prompt="100% pure_techno"),
    ]
    cat.upsert(rows)

    def ids(**kw: object) -> set[str]:
        return {s.id for s in cat.list_tracks(TrackQuery(**kw)).items}  # type: ignore[arg-type]

    assert ids(bpm_min=100, bpm_max=130) == {rows[1].id, rows[2].id, rows[5].id}
    assert ids(bpm_min=100, bpm_max=130, key="C", mode="major",
               engine="synth") == {rows[1].id, rows[2].id}
    assert ids(prompt_contains="TECHNO") == {rows[0].id, rows[2].id, rows[4].id, rows[5].id}
    assert ids(prompt_contains="100%") == {rows[5].id}  # no LIKE wildcards leak through
    assert ids(prompt_contains="_") == {rows[5].id}
    assert ids(status="failed") == {rows[4].id}
    assert ids(lufs_min=-17, lufs_max=-10) == {rows[0].id, rows[1].id, rows[4].id, rows[5].id}
    assert ids(created_from=T0 + timedelta(hours=2),
               created_to=T0 + timedelta(hours=4)) == {rows[2].id, rows[3].id}
    assert ids(kind="upload") == set()


@pytest.mark.parametrize("bad", [
    {"bpm_min": 130, "bpm_max": 100},
    {"lufs_min": -5, "lufs_max": -20},
    {"key": "H"},
    {"key": "C'; DROP TABLE tracks; --"},
    {"limit": 0},
    {"cursor": "garbage!"},
    {"cursor": encode_cursor("0" * 26)[:-3]},
    {"created_from": datetime(2026, 1, 1)},
    {"status": "done"},
])
def test_bad_queries_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, InvalidRequestError)):
        TrackQuery(**bad)  # type: ignore[arg-type]


def test_cursor_pagination_is_stable(cat: Catalogue) -> None:
    rows = [track(i) for i in range(23)]
    cat.upsert(rows)
    seen: list[str] = []
    query = TrackQuery(limit=5)
    page = cat.list_tracks(query)
    first_page = [s.id for s in page.items]
    cat.upsert([track(100, when=T0 + timedelta(days=30))])  # newer rows don't shift pages
    while True:
        seen += [s.id for s in page.items]
        if page.next_cursor is None:
            break
        page = cat.list_tracks(query.model_copy(update={"cursor": page.next_cursor}))
    assert seen == sorted((r.id for r in rows), reverse=True)
    assert first_page == seen[:5]


def test_stats_and_prompts(cat: Catalogue) -> None:
    cat.upsert([track(0), track(1), track(2, status="failed"), track(3, status="pending")])
    cat.record_prompts(["lofi beat", "lofi beat", "rock"])
    cat.record_prompts(["lofi beat"])
    stats = cat.stats()
    assert stats.counts_by_status == {"completed": 2, "failed": 1, "pending": 1}
    assert stats.total_tracks == 4
    assert stats.total_bytes == 1000 + 1001
    assert stats.bytes_by_day == {"2026-11-01": 2001}
    assert stats.top_prompts == [("lofi beat", 3), ("rock", 1)]


def test_events_and_cursors(cat: Catalogue) -> None:
    ev = EventRecord(bucket="b", key="incoming/a b.wav", etag="e1", status="processed",
                     track_id=new_id(), processed_at=T0)
    assert cat.get_event("b", "incoming/a b.wav", "e1") is None
    cat.record_event(ev)
    cat.record_event(ev)
    assert cat.get_event("b", "incoming/a b.wav", "e1") == ev
    assert cat.get_event("b", "incoming/a b.wav", "e2") is None
    assert cat.get_cursor("poller") is None
    cat.set_cursor("poller", "incoming/x")
    cat.set_cursor("poller", "incoming/y")
    assert cat.get_cursor("poller") == "incoming/y"


def test_second_process_gets_clear_lock_error(cat: Catalogue) -> None:
    code = ("from storage.catalogue.store import Catalogue\n"
            "from musicfn.errors import CatalogueLockedError\n"
            "try:\n"
            f"    Catalogue({str(cat.path)!r})\n"
            "except CatalogueLockedError as e:\n"
            "    print(e.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert str(cat.path) in out.stdout
    assert "locked by another process" in out.stdout
    assert f"PID {os.getpid()}" in out.stdout


def test_not_a_catalogue_file(tmp_data: Path) -> None:
    bogus = tmp_data / "bogus.duckdb"
    bogus.write_bytes(b"this is not a duckdb file" * 200)
    with pytest.raises(CatalogueError):
        Catalogue(bogus)


@pytest.mark.fault
def test_kill_9_mid_batch_keeps_every_acknowledged_row(tmp_data: Path) -> None:
    """A writer prints each id after its batch committed; SIGKILL it mid-stream; every
    printed id must be readable afterwards."""
    path = tmp_data / "crash.duckdb"
    writer = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime
        from storage.catalogue.store import Catalogue
        from storage.keys import new_id
        from storage.sidecar import Sidecar
        cat = Catalogue({str(path)!r})
        while True:
            batch = [Sidecar(id=new_id(), kind="generation", status="pending",
                             created_at=datetime.now(UTC), prompt="p" * 200)
                     for _ in range(50)]
            cat.upsert(batch)
            print(" ".join(s.id for s in batch), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked += line.split()
        if len(acked) >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    acked += [i for line in proc.stdout.read().splitlines() for i in line.split()]
    reopened = Catalogue(path)
    try:
        present = reopened.ids()
        assert set(acked) <= present
        assert len(present) == len(set(present))
    finally:
        reopened.close()


def test_idempotency_keys(cat: Catalogue) -> None:
    first, second = new_id(), new_id()
    assert cat.claim_idempotency_key("k1", "h1", first) == first
    assert cat.claim_idempotency_key("k1", "h1", second) == first  # same key + body: same job
    with pytest.raises(ConflictError) as err:
        cat.claim_idempotency_key("k1", "other-body", second)
    assert err.value.code == "idempotency_key_reused"
    assert cat.claim_idempotency_key("k2", "h1", second) == second
