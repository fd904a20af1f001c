"""Fault tolerance with real faults: a killed engine replica, a failing health check, a flood
past the queue limits, S3 stopped mid-batch, the catalogue owner SIGKILLed, its file deleted.

Each test deploys its own musicfn app (synth engine, real SeaweedFS, real DuckDB owner) and
ends by checking that nothing was lost: audio objects = sidecars = completed rows, and
``storage.verify`` finds no problem.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.faults import unhealthy_marker
from musicfn_cli.commands.catalogue_access import OwnerCatalogue
from storage.catalogue.actor import OwnerClient
from storage.embedded_s3 import EmbeddedS3
from storage.reindex import cleanup_orphans
from storage.verify import verify
from tests.support import make_settings, start_s3_server
from tests.support.faults import (
    App,
    RefusingPort,
    actor_pid,
    app_settings,
    assert_nothing_lost,
    catalogue_rows,
    deploy,
    replicas,
    run_verify,
    running_replicas,
    teardown,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.ray]
STORAGE_CODES = {"storage_unreachable", "storage_transient"}


@pytest.fixture
def make_app(serve_url: str, s3_server: EmbeddedS3, tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(name: str, server: EmbeddedS3 | None = None, **kwargs: Any) -> App:
        settings = app_settings(make_settings, server or s3_server, tmp_path / name)
        (tmp_path / name).mkdir(exist_ok=True)
        app = deploy(name, settings, tmp_path, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        teardown(app)


def test_killed_engine_replica_requests_are_retried(make_app: Any) -> None:
    import ray

    app = make_app("f-kill")
    app.hold()
    ids = [app.accepted(seed=i) for i in range(3)]
    wait_until(lambda: app.engine().stats.remote().result()["pending_jobs"] == 3,
               "the 3 requests inside the replica")
    [(name, replica)] = replicas(app.name).items()
    ray.kill(replica, no_restart=True)
    wait_until(lambda: set(replicas(app.name)) - {name} != set() and
               running_replicas(app.name) == 1, "Serve to replace the killed replica")
    app.release()
    records = app.wait_final(ids)
    assert {r["status"] for r in records.values()} == {"completed"}, records
    later = app.post(wait=90, seed=9)
    assert later.status_code == 200 and later.json()["status"] == "completed", later.text
    assert_nothing_lost(app)


def test_failing_health_check_replaces_only_that_replica(make_app: Any) -> None:
    app = make_app("f-health", num_replicas=2, health_check_period_s=1)
    wait_until(lambda: len(replicas(app.name)) == 2, "two replicas")
    before = replicas(app.name)
    sick_name, sick = sorted(before.items())[0]
    (app.control / unhealthy_marker(actor_pid(sick))).touch()
    ids: list[str] = []
    while sick_name in replicas(app.name) or running_replicas(app.name) < 2:
        r = app.post(wait=60, seed=len(ids))  # the healthy replica keeps serving
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        ids.append(r.json()["id"])
        assert len(ids) < 200, "the unhealthy replica was never replaced"
    after = replicas(app.name)
    assert sick_name not in after and len(after) == 2
    assert set(after) & set(before) == set(before) - {sick_name}  # the other one stayed
    ids += [app.accepted(seed=1000 + i) for i in range(3)]
    assert {r["status"] for r in app.wait_final(ids).values()} == {"completed"}
    assert_nothing_lost(app)


def test_flood_beyond_the_queue_gets_503_and_leaves_nothing(make_app: Any) -> None:
    from ray.serve.exceptions import BackPressureError

    from engines.requests import GenerationRequest

    # One replica works one request at a time and Serve queues 2 more: capacity 3, and the
    # queue (global, in the catalogue) admits exactly that many jobs.
    app = make_app("f-flood", max_ongoing_requests=1, max_queued_requests=2, max_batch_size=1,
                   max_pending_jobs=3)
    app.hold()  # a long generation occupies the replica
    accepted = [app.accepted(seed=i) for i in range(3)]
    rejected = [app.post(seed=100 + i) for i in range(6)]
    for r in rejected:
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        body = r.json()
        assert body["code"] == "queue_full" and "(limit 3)" in body["message"]
    listed = app.client.get("/v1/generations", params={"limit": 100}).json()["items"]
    assert sorted(t["id"] for t in listed) == sorted(accepted)  # no row for a rejected POST
    # Serve's own limit holds too: a handle's queue takes max_queued_requests, then refuses.
    engine = app.engine()
    queued = [engine.generate.remote(GenerationRequest(prompt="direct", duration_s=1.0,
                                                       seed=s)) for s in (1, 2)]
    with pytest.raises(BackPressureError):
        engine.generate.remote(GenerationRequest(prompt="direct", duration_s=1.0,
                                                 seed=3)).result(timeout_s=60)
    app.release()
    assert all(r.result(timeout_s=120).seed in (1, 2) for r in queued)
    assert {r["status"] for r in app.wait_final(accepted).values()} == {"completed"}
    again = app.post(wait=90, seed=7)  # capacity is back
    assert again.status_code == 200 and again.json()["status"] == "completed", again.text
    assert len(catalogue_rows(app)) == 4
    assert_nothing_lost(app)


def test_backpressure_error_maps_to_503_json() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from ray.serve.exceptions import BackPressureError

    from deployments.http_errors import install_error_handlers

    api = FastAPI()
    install_error_handlers(api)

    @api.get("/x")
    async def full() -> None:
        raise BackPressureError(num_queued_requests=2, max_queued_requests=2)

    r = TestClient(api).get("/x")
    assert (r.status_code, r.headers["retry-after"], r.json()["code"]) == (503, "5",
                                                                           "queue_full")


def test_s3_stopped_mid_batch_jobs_retry_or_fail_clearly(make_app: Any,
                                                         tmp_path: Path) -> None:
    server = start_s3_server(tmp_path / "private-s3")
    try:
        app = make_app("f-s3", server=server)
        # Wave 1: a short outage while the uploads run; the pipeline's retries ride it out.
        app.hold()
        wave1 = [app.accepted(seed=i) for i in range(4)]
        wait_until(lambda: app.engine().stats.remote().result()["pending_jobs"] == 4,
                   "wave 1 in the engine")
        server.stop()
        with RefusingPort(server.port) as port:  # S3 stays down; we see the upload attempts
            app.release()
            wait_until(lambda: port.attempts > 0, "an upload against the stopped S3")
        server.start()
        # Wave 2: an outage longer than the retries: every job fails, clearly.
        app.hold()
        first = app.wait_final(wave1)
        wave2 = [app.accepted(seed=10 + i) for i in range(3)]
        wait_until(lambda: app.engine().stats.remote().result()["pending_jobs"] == 3,
                   "wave 2 in the engine")
        server.stop()
        app.release()
        second = app.wait_final(wave2)
        server.start()
        for rec in [*first.values(), *second.values()]:
            error = rec["record"]["error"]
            assert rec["status"] == "completed" or (
                error["code"] in STORAGE_CODES and error["stage"] == "upload"), rec
        assert {r["status"] for r in second.values()} == {"failed"}
        failed = {i for i, r in {**first, **second}.items() if r["status"] == "failed"}
        # Nothing half-written: no sidecar of a failed job; audio of one is an orphan at most.
        report = verify(app.objects, OwnerCatalogue(OwnerClient(app.owner())), app.settings)
        assert {p.kind for p in report.problems} <= {"orphan_audio"}
        assert {p.id for p in report.problems} <= failed
        out = run_verify(app)
        assert out.returncode == (0 if report.ok else 1), out.stderr
        assert json.loads(out.stdout)["counts"] == report.counts()
        cleanup_orphans(app.objects, app.settings, grace=timedelta(0),
                        now=datetime.now(UTC) + timedelta(seconds=5))
        assert run_verify(app).returncode == 0
        assert_nothing_lost(app)
    finally:
        server.stop()


def test_catalogue_owner_sigkill_during_a_burst(make_app: Any) -> None:
    import ray

    app = make_app("f-owner")
    app.hold()
    first = [app.accepted(seed=i) for i in range(3)]
    pid = actor_pid(app.owner())
    with ThreadPoolExecutor(6) as pool:
        burst = [pool.submit(app.post, seed=100 + i) for i in range(6)]
        os.kill(pid, signal.SIGKILL)  # while the burst's rows are being written
        answers = [f.result() for f in burst]
    assert [r.status_code for r in answers] == [202] * 6, [r.text for r in answers]
    acked = first + [r.json()["id"] for r in answers]
    assert actor_pid(app.owner()) != pid  # restarted
    app.release()
    records = app.wait_final(acked)
    assert {r["status"] for r in records.values()} == {"completed"}
    rows = catalogue_rows(app)
    assert sorted(rows) == sorted(acked)  # every acknowledged write, once
    status = ray.get(app.owner().rebuild_status.remote())
    assert status.rebuilds == 0  # the file survived the crash
    assert_nothing_lost(app)


def test_deleted_catalogue_file_is_rebuilt_while_serving(make_app: Any) -> None:
    import ray

    app = make_app("f-delete")
    done = [app.post(wait=90, seed=i).json()["id"] for i in range(4)]
    before = {i: sc for i, sc in catalogue_rows(app).items() if sc.status == "completed"}
    assert sorted(before) == sorted(done)
    app.hold()
    in_flight = app.accepted(seed=50)
    path = app.settings.catalogue_file
    owner = app.owner()
    # A new file is reconciled with the (empty) bucket once at start.
    wait_until(lambda: not ray.get(owner.rebuild_status.remote()).pending_reconcile,
               "the first reconciliation")
    start = ray.get(owner.rebuild_status.remote())
    assert start.rebuilds == 0
    path.unlink()
    wait_until(lambda: ray.get(owner.rebuild_status.remote()).reconciled > start.reconciled,
               "the owner to rebuild the file")
    status = ray.get(owner.rebuild_status.remote())
    assert status.rebuilds == 1 and status.last_reason == "file deleted"
    assert status.last_upserted == 4 and path.exists()
    rows = catalogue_rows(app)
    assert {i: sc for i, sc in rows.items() if sc.status == "completed"} == before
    assert rows[in_flight].status in ("pending", "processing")  # salvaged, not lost
    app.release()
    assert app.wait_final([in_flight])[in_flight]["status"] == "completed"
    assert app.post(wait=90, seed=60).json()["status"] == "completed"
    assert len(catalogue_rows(app)) == 6
    assert_nothing_lost(app)


def test_owner_recreates_a_deleted_file_in_process(objects: Any, settings: Any) -> None:
    """The owner logic without Ray: delete the open file, the next check re-creates it with
    every row (pending ones too), reconciled with the bucket; a lost file at start is
    rebuilt from the sidecars alone."""
    from storage.catalogue.owner import CatalogueOwner
    from storage.keys import new_id
    from storage.sidecar import Sidecar
    from storage.tracks import TrackStore
    from tests.support.tracks import make_track

    store = TrackStore(objects, settings)
    owner = CatalogueOwner(settings.catalogue_file, settings=settings, watch_interval_s=0)
    assert owner.rebuild_status().pending_reconcile  # new file: fill from the bucket
    owner.check_file()
    tracks = []
    for n in range(5):
        sc, audio = make_track(store, n, datetime.now(UTC))
        tracks.append(store.write(sc, audio))
    pending = Sidecar(id=new_id(), kind="generation", status="pending",
                      created_at=datetime.now(UTC), prompt="in flight")
    owner.upsert([*tracks[:4], pending])  # the 5th track's row was never written
    owner.claim_idempotency_key("k1", "sha", pending.id)
    settings.catalogue_file.unlink()
    assert owner.check_file() is True
    status = owner.rebuild_status()
    assert (status.rebuilds, status.last_salvaged_rows, status.last_upserted) == (1, 5, 5)
    assert owner.ids() == {*(t.id for t in tracks), pending.id}
    assert owner.claim_idempotency_key("k1", "sha", "other") == pending.id
    rows = owner.rows()
    owner.close()
    settings.catalogue_file.unlink()
    fresh = CatalogueOwner(settings.catalogue_file, settings=settings, watch_interval_s=0)
    fresh.check_file()
    assert fresh.ids() == {t.id for t in tracks}  # the sidecars: every committed track
    assert [r for r in fresh.rows() if r[2] == "completed"] == \
        [r for r in rows if r[2] == "completed"]
    fresh.close()
