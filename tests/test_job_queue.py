"""The job queue in the catalogue (a real DuckDB file): accept, lease, heartbeat, finish once,
cancel, re-drive after a lost lease, exhaustion, and what ``musicfn verify`` calls stranded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from musicfn.errors import ConflictError
from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.jobs_schema import Enqueued, GenerationAccept, JobRecord, Refused
from storage.keys import new_id, utc_now
from storage.objects import ObjectStore
from storage.sidecar import ErrorInfo, Sidecar
from storage.verify import verify


@pytest.fixture
def queue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "jobs.duckdb")


def generation(max_attempts: int = 3) -> tuple[JobRecord, Sidecar]:
    track = Sidecar(id=new_id(), kind="generation", status="pending", created_at=utc_now(),
                    prompt="a test prompt")
    return JobRecord(id=track.id, kind="generation", max_attempts=max_attempts), track


def accept(queue: Catalogue, *generations: tuple[JobRecord, Sidecar], max_depth: int = 1000,
           idempotency: tuple[str, str] | None = None) -> list[Enqueued | Refused]:
    """Accept generations as the front door does (``Catalogue.accept_generations``)."""
    return queue.accept_generations([GenerationAccept(job=j, track=t, max_depth=max_depth,
                                                      idempotency=idempotency)
                                     for j, t in generations])


def test_accept_is_atomic_with_depth_dedupe_and_idempotency(queue: Catalogue) -> None:
    jobs = [generation() for _ in range(3)]
    done = accept(queue, *jobs[:2], max_depth=2)
    assert [d.created for d in done if isinstance(d, Enqueued)] == [True, True]
    assert queue.get(jobs[0][1].id).status == "pending"  # type: ignore[union-attr]
    [full] = accept(queue, jobs[2], max_depth=2)  # full: nothing of the third is written
    assert isinstance(full, Refused) and full.code == "queue_full"
    assert queue.get(jobs[2][1].id) is None and queue.job(jobs[2][1].id) is None
    events = [JobRecord(id=new_id(), kind="event", dedupe_key="bucket/k\netag\n")
              for _ in range(2)]
    first, second = queue.enqueue(events)
    assert first.created and not second.created and second.job_id == first.job_id
    assert queue.queue_depth() == 3
    a, b = generation(), generation()
    [owner] = accept(queue, a, idempotency=("key-1", "sha-a"))
    [again] = accept(queue, b, idempotency=("key-1", "sha-a"))
    assert isinstance(owner, Enqueued) and isinstance(again, Enqueued)
    assert (again.job_id, again.created) == (owner.job_id, False)
    [reused] = accept(queue, b, idempotency=("key-1", "sha-b"))
    assert isinstance(reused, Refused) and reused.code == "idempotency_key_reused"
    assert queue.stats().top_prompts == [("a test prompt", 3)]


def test_lost_lease_is_re_driven_and_only_the_holder_finishes(queue: Catalogue) -> None:
    job, track = generation()
    accept(queue, (job, track))
    [leased] = queue.lease("runner-a", 10, lease_s=0.3).run
    assert leased.attempts == 1 and queue.get(track.id).status == "processing"  # type: ignore[union-attr]
    assert queue.lease("runner-b", 10, lease_s=0.3).run == []  # held
    time.sleep(0.4)  # runner-a died: no heartbeat
    [again] = queue.lease("runner-b", 10, lease_s=30).run
    assert again.attempts == 2
    assert queue.heartbeat("runner-a", {job.id: 0.5}, 30).lost == [job.id]
    assert queue.finish(job.id, "runner-a", "completed") is None  # not its job any more
    done = track.model_copy(update={"status": "completed", "completed_at": utc_now()})
    assert queue.finish(job.id, "runner-b", "completed", track=done) == "completed"
    assert queue.get(track.id) == done and queue.queue_depth() == 0


def test_out_of_attempts_comes_back_exhausted(queue: Catalogue) -> None:
    job, track = generation(max_attempts=1)
    accept(queue, (job, track))
    assert len(queue.lease("a", 1, lease_s=0.1).run) == 1
    time.sleep(0.2)
    lease = queue.lease("b", 1, lease_s=30)
    assert lease.run == [] and [j.id for j in lease.exhausted] == [job.id]
    error = ErrorInfo(code="interrupted", message="gave up")
    assert queue.finish(job.id, "b", "failed", error=error) == "failed"
    row = queue.get(track.id)
    assert row is not None and row.status == "failed" and row.error == error


def test_cancel_queued_running_and_finished(queue: Catalogue) -> None:
    (a, ta), (b, tb) = generation(), generation()
    accept(queue, (a, ta), (b, tb))
    queue.lease("r", 1, lease_s=30)  # a runs, b waits
    assert queue.cancel(b.id).outcome == "canceled"
    assert queue.get(tb.id).status == "canceled"  # type: ignore[union-attr]
    assert queue.cancel(a.id).cancel_requested
    assert queue.heartbeat("r", {a.id: None}, 30).cancel == [a.id]
    # Whatever the runner reports, a job whose cancel was requested ends canceled.
    assert queue.finish(a.id, "r", "completed") == "canceled"
    assert queue.get(ta.id).status == "canceled"  # type: ignore[union-attr]
    with pytest.raises(ConflictError):
        queue.cancel(a.id)


def test_verify_reports_jobs_no_runner_holds(queue: Catalogue, objects: ObjectStore,
                                              settings: Settings) -> None:
    fast = settings.model_copy(update={"job_lease_s": 1.0, "job_poll_interval_s": 0.1})
    job, track = generation()
    accept(queue, (job, track))
    assert verify(objects, queue, fast).ok  # fresh: a runner may take it any moment
    time.sleep(1.3)
    report = verify(objects, queue, fast)
    assert [(p.kind, p.id) for p in report.problems] == [("stranded_job", job.id)]
    queue.lease("r", 1, lease_s=30)
    assert verify(objects, queue, fast).ok  # a live lease: someone works on it


def test_generations_accepted_together_are_decided_one_by_one(queue: Catalogue) -> None:
    first, again, other_body, *rest = [generation() for _ in range(6)]
    prior = queue.accept_generations([GenerationAccept(
        job=first[0], track=first[1], idempotency=("k", "body-1"), max_depth=4)])
    assert prior == [Enqueued(job_id=first[1].id, created=True)]
    batch = [
        GenerationAccept(job=again[0], track=again[1], idempotency=("k", "body-1"),
                         max_depth=3),  # a repeat: the first job
        GenerationAccept(job=other_body[0], track=other_body[1], idempotency=("k", "body-2"),
                         max_depth=3),  # the key with another body
        *(GenerationAccept(job=j, track=t, max_depth=3) for j, t in rest),  # 1 + 2 fit
    ]
    out = queue.accept_generations(batch)
    assert out[0] == Enqueued(job_id=first[1].id, created=False)
    assert isinstance(out[1], Refused) and out[1].code == "idempotency_key_reused"
    assert out[2:4] == [Enqueued(job_id=t.id, created=True) for _, t in rest[:2]]
    assert isinstance(out[4], Refused) and out[4].code == "queue_full"  # depth 3 reached
    for _, track in [first, *rest[:2]]:  # accepted: job and pending row, prompt counted
        assert queue.get(track.id).status == "pending"  # type: ignore[union-attr]
        assert queue.job(track.id) is not None
    for _, track in [again, other_body, rest[2]]:  # refused or repeated: nothing written
        assert queue.get(track.id) is None and queue.job(track.id) is None
    assert queue.stats().top_prompts == [("a test prompt", 3)]
