"""Durable invocations: an accepted job reaches exactly one outcome whatever process dies.

Real Ray, Serve, SeaweedFS and DuckDB; faults are real: SIGKILL of a JobRunner or Ingress
replica, clients hanging up on raw sockets, slow senders. Leases are short here (3 s) so a
re-drive happens within the test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings
from tests.support.faults import (
    App,
    actor_pid,
    app_settings,
    assert_nothing_lost,
    catalogue_rows,
    deploy,
    teardown,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.ray]
API_KEY = "durable-key"


@pytest.fixture
def make_app(serve_url: str, s3_server: EmbeddedS3, tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(name: str, **overrides: Any) -> App:
        (tmp_path / name).mkdir(exist_ok=True)
        settings = app_settings(make_settings, s3_server, tmp_path / name, job_lease_s=3.0,
                                job_poll_interval_s=0.5, request_body_timeout_s=2.0,
                                **overrides)
        app = deploy(name, settings, tmp_path)
        apps.append(app)
        return app

    yield make
    for app in apps:
        teardown(app)


def replica_actors(app_name: str, deployment: str) -> list[Any]:
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return [ray.get_actor(e["name"], namespace=e["namespace"])
            for e in ray.util.list_named_actors(all_namespaces=True)
            if e["name"].startswith(prefix)]


def engine_pending(app: App) -> int:
    return int(app.engine().stats.remote().result()["pending_jobs"])


def test_killed_runner_jobs_complete_exactly_once(make_app: Any) -> None:
    app = make_app("d-runner")
    app.hold()  # the engine holds every generation until released
    ids = [app.accepted(seed=i) for i in range(6)]
    wait_until(lambda: engine_pending(app) == 6, "all six jobs in the engine")
    assert {app.get(i)["status"] for i in ids} == {"processing"}
    [runner] = replica_actors(app.name, "JobRunner")
    os.kill(actor_pid(runner), signal.SIGKILL)
    app.release()
    done = app.wait_final(ids, timeout_s=240)
    assert {r["status"] for r in done.values()} == {"completed"}
    assert max(r["attempts"] for r in done.values()) >= 2  # re-driven after the lease expired
    assert_nothing_lost(app)  # one audio object, one sidecar, one completed row each


def test_killed_ingress_strands_nothing(make_app: Any) -> None:
    app = make_app("d-ingress")
    app.hold()
    ids = [app.accepted(seed=i) for i in range(8)]
    [ingress] = replica_actors(app.name, "Ingress")
    os.kill(actor_pid(ingress), signal.SIGKILL)
    app.release()

    def all_final() -> bool:
        try:
            return all(app.get(i)["status"] == "completed" for i in ids)
        except (httpx.HTTPError, AssertionError):  # the ingress is being replaced
            return False

    wait_until(all_final, "every job to complete after the ingress died", timeout_s=240)
    assert_nothing_lost(app)


def _hang_up(base: str, body: bytes, after_s: float) -> None:
    host, port = base.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + base.removeprefix("http://").split("/", 1)[1] + "/v1/generations"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(after_s)  # then close without reading the answer


def test_clients_hanging_up_leave_no_stranded_rows(make_app: Any) -> None:
    app = make_app("d-hangup")
    base = str(app.client.base_url).rstrip("/")
    threads = []
    for i in range(30):
        body = json.dumps({"prompt": "hang up test", "duration_s": 1.0, "engine": "synth",
                           "seed": i}).encode()
        # Hang up 0-150 ms after sending (most never accepted), or up to 1 s (most accepted).
        after = random.uniform(0, 0.15) if i % 2 else random.uniform(0.15, 1.0)
        t = threading.Thread(target=_hang_up, args=(base, body, after))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    time.sleep(2.0)  # requests in flight have written their rows (or not) by now
    rows = catalogue_rows(app)
    assert rows  # most POSTs got far enough to be accepted
    done = app.wait_final(rows, timeout_s=120)
    assert {r["status"] for r in done.values()} == {"completed"}
    assert_nothing_lost(app)


def test_cancel_pending_and_running_and_delete_conflict(make_app: Any) -> None:
    app = make_app("d-cancel", runner_concurrency=1)
    app.hold()
    running = app.accepted(seed=1)
    wait_until(lambda: engine_pending(app) == 1, "the first job in the engine")
    pending = app.accepted(seed=2)
    assert app.get(pending)["status"] == "pending"
    r = app.client.post(f"/v1/generations/{pending}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    r = app.client.delete(f"/v1/generations/{running}")
    assert r.status_code == 409 and r.json()["code"] == "job_in_progress", r.text
    r = app.client.post(f"/v1/generations/{running}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    done = app.wait_final([running, pending], timeout_s=60)
    assert {r["status"] for r in done.values()} == {"canceled"}
    r = app.client.post(f"/v1/generations/{running}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "job_finished"
    app.release()
    assert list(app.objects.list(f"{app.settings.generations_prefix}/")) == []
    assert app.client.delete(f"/v1/generations/{running}").status_code == 204


def test_sse_stream_reaches_the_final_status(make_app: Any) -> None:
    app = make_app("d-sse")
    job = app.accepted(seed=3)
    frames = []
    with app.client.stream("GET", f"/v1/generations/{job}/events", timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "status":
                frames.append(json.loads(line.removeprefix("data: ")))
    assert frames and frames[-1]["status"] == "completed" and frames[-1]["id"] == job
    assert frames[0]["status"] in ("pending", "processing", "completed")


def test_unauthenticated_and_slow_clients_never_stall_the_front_door(make_app: Any) -> None:
    app = make_app("d-door", api_key=API_KEY)
    auth = {"x-api-key": API_KEY}
    base = str(app.client.base_url).rstrip("/")
    host, port = base.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + base.removeprefix("http://").split("/", 1)[1] + "/v1/generations"
    app.hold()  # jobs stay unfinished: every ?wait= poll below waits its full time
    job = httpx.post(f"{base}/v1/generations", headers=auth, timeout=30,
                     json={"prompt": "door", "duration_s": 1.0, "engine": "synth"}).json()["id"]
    socks = []
    for _ in range(20):  # strangers announcing 1 MB and trickling it
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                  "\r\nContent-Length: 1000000\r\n\r\n{".encode())
        socks.append(s)
    waits = [threading.Thread(target=lambda i=i: httpx.post(
        f"{base}/v1/generations", params={"wait": 20}, headers=auth, timeout=60,
        json={"prompt": "door", "duration_s": 1.0, "engine": "synth", "seed": i}))
        for i in range(20)]
    for t in waits:
        t.start()
    try:
        for s in socks:  # refused on the headers alone: 401 without reading the body
            s.settimeout(10)
            head = s.recv(4096).decode(errors="replace")
            assert head.startswith("HTTP/1.1 401"), head[:200]
        time.sleep(1.0)  # the ?wait= polls are all in flight now
        for _ in range(10):  # the front door still answers at once (5 s is a deadline)
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            r = httpx.get(f"{base}/v1/generations/{job}", headers=auth, timeout=5)
            assert r.status_code == 200 and r.json()["status"] in ("pending", "processing")
        # An authenticated sender that stalls gets 408 once the body deadline passes.
        with socket.create_connection((host, int(port)), timeout=15) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
            head = b""
            while b"body_timeout" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            text = head.decode(errors="replace")
            assert text.startswith("HTTP/1.1 408") and "body_timeout" in text, text[:300]
    finally:
        for s in socks:
            s.close()
        app.release()
        for t in waits:
            t.join()


def test_scaling_the_ingress_and_redeploying_under_load_loses_nothing(
        serve_url: str, s3_server: EmbeddedS3, tmp_path: Path) -> None:
    from ray import serve

    from deployments.ingress import Ingress
    from deployments.musicgen import build_app as build_musicgen
    from deployments.runner import JobRunner
    from storage.objects import ObjectStore

    # Scaling and redeploying hand jobs back at once; the lease is only the fallback here, long
    # enough that a saturated box's late heartbeat does not also re-drive a job still running.
    settings = app_settings(make_settings, s3_server, tmp_path, job_lease_s=15.0,
                            job_poll_interval_s=0.5)
    name = "d-scale"

    def deploy_with(replicas: int, body_timeout_s: float) -> None:
        cfg = settings.model_copy(update={"request_body_timeout_s": body_timeout_s})
        engine = build_musicgen({"engine": "synth", "device": "cpu", "num_cpus": 0,
                                 "batch_wait_timeout_s": 0.01})
        runner: Any = JobRunner
        ingress: Any = Ingress
        app = ingress.options(num_replicas=replicas).bind(
            engine, runner.bind(engine, settings=cfg.model_dump()), default_model="synth",
            settings=cfg.model_dump())
        serve.run(app, name=name, route_prefix=f"/{name}")

    deploy_with(2, 10.0)
    client = httpx.Client(base_url=f"{serve_url}/{name}", timeout=30)
    app = App(name, client, settings, tmp_path, ObjectStore(settings))
    accepted: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = app.post(seed=i, duration_s=1.0)
            except httpx.HTTPError:  # a replica going away mid-request: not accepted
                continue
            if r.status_code == 202:
                accepted.append(r.json()["id"])

    loaders = [threading.Thread(target=load) for _ in range(3)]
    for t in loaders:
        t.start()
    try:
        time.sleep(3)
        deploy_with(1, 10.0)  # scale down 2 -> 1 (what the autoscaler or dashboard does)
        time.sleep(3)
        deploy_with(1, 11.0)  # a redeploy with new settings: every replica restarts
        time.sleep(3)
    finally:
        stop.set()
        for t in loaders:
            t.join()
    try:
        assert len(accepted) > 10
        done = app.wait_final(accepted, timeout_s=240)
        assert {r["status"] for r in done.values()} == {"completed"}
        assert_nothing_lost(app)
    finally:
        client.close()
        teardown(app)
