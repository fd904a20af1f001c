"""Job-layer benchmark on a local Ray cluster, measured side by side in one run:

- POST /v1/generations → 202 latency p50/p99 with 20 concurrent clients, next to a bare Serve
  endpoint taking the same POST (the floor);
- accept → start (the job's lease) p50/p99 with an idle runner;
- jobs/s for 2 s synth clips with 20 clients (accept to completed);
- time from SIGKILL of the JobRunner replica holding jobs to all of them completed elsewhere
  (lease ``--lease`` s).

    .venv/bin/python bench/jobs_bench.py [--jobs 100] [--lease 10]

It imports nothing from tests/ (a site-packages ``tests`` would shadow it).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ray
from cpu_use import cpu_profile, cpu_seconds
from ray import serve

from deployments.app import build_app
from musicfn.ports import free_port_block
from musicfn.priority import ray_worker_niceness_env
from musicfn.settings import Settings
from storage.catalogue.actor import owner_name
from storage.embedded_s3 import EmbeddedS3

CLIENTS = 20
FINAL = ("completed", "failed", "canceled")
BODY = {"prompt": "bench groove", "duration_s": 2.0, "engine": "synth", "bpm": 110}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
class Bare:
    """The floor: a Serve HTTP endpoint that reads a JSON body and answers 202."""

    async def __call__(self, request: Any) -> dict[str, str]:
        await request.json()
        return {"id": "x", "status": "pending"}


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def posts(url: str, n: int, seed0: int) -> tuple[list[float], list[str]]:
    """``n`` POSTs from CLIENTS threads: latencies (ms) and job ids."""
    lat: list[float] = []
    ids: list[str] = []
    with httpx.Client(timeout=60, trust_env=False,
                      limits=httpx.Limits(max_connections=CLIENTS)) as client:
        def one(i: int) -> None:
            t = time.perf_counter()
            r = client.post(url, json={**BODY, "seed": seed0 + i})
            lat.append((time.perf_counter() - t) * 1000)
            if r.status_code not in (200, 202):
                raise SystemExit(f"POST {url}: {r.status_code} {r.text[:200]}")
            ids.append(r.json()["id"])
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(one, range(n)))
    return lat, ids


def wait_done(owner: Any, ids: list[str], timeout_s: float = 600) -> list[Any]:
    """Wait until every job ended, polling with one ``statuses`` call per tick (what the
    service's own watcher does: a call per job per tick would load the owner more than
    the jobs do), then fetch the job records once."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = ray.get(owner.statuses.remote(ids))
        if all(statuses.get(i, ("pending",))[0] in FINAL for i in ids):
            return ray.get([owner.job.remote(i) for i in ids])
        if time.monotonic() > deadline:
            raise SystemExit("jobs did not finish in time")
        time.sleep(0.2)


def runner_pids(app: str) -> list[int]:
    prefix = f"SERVE_REPLICA::{app}#JobRunner#"
    pids = []
    for e in ray.util.list_named_actors(all_namespaces=True):
        if e["name"].startswith(prefix):
            actor = ray.get_actor(e["name"], namespace=e["namespace"])
            pids.append(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())))
    return pids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--lease", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s3_port, http_port = free_port_block(5, gap=10000), free_port_block()
        s3 = EmbeddedS3(Path(tmp) / "s3", s3_port, "bench", "bench-secret").start()
        control = Path(tmp) / "control"
        control.mkdir()
        try:
            settings = Settings(embedded_s3_port=s3_port, s3_access_key="bench",
                                s3_secret_key="bench-secret", data_dir=Path(tmp),
                                job_lease_s=args.lease, ray_namespace="bench-jobs")
            ray_worker_niceness_env()  # as the service starts Ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     namespace="bench-jobs")
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
            serve.run(build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.25,
                                 "max_pending_jobs": 1000,
                                 "fault_injection": {"control_dir": str(control)},
                                 "settings": settings.model_dump()}),
                      name="musicfn", route_prefix="/")
            serve.run(Bare.bind(), name="bare", route_prefix="/bare")  # type: ignore[attr-defined]
            owner = ray.get_actor(owner_name(settings.catalogue_file), namespace="bench-jobs")
            run(f"http://127.0.0.1:{http_port}", owner, control, args)
        finally:
            serve.shutdown()
            ray.shutdown()
            s3.stop()


def run(base: str, owner: Any, control: Path, args: argparse.Namespace) -> None:
    url = f"{base}/v1/generations"
    posts(url, 4, 0)  # warm-up: workers, connections
    time.sleep(3)
    # 1. Accept latency next to the floor, and accept -> start.
    bare_lat, _ = posts(f"{base}/bare", args.jobs, 0)
    cpu = cpu_seconds()
    t0 = time.perf_counter()
    lat, ids = posts(url, args.jobs, 1000)
    jobs = wait_done(owner, ids)
    elapsed = time.perf_counter() - t0
    per_job = cpu_profile(cpu, args.jobs)
    starts = [(j.started_at - j.created_at).total_seconds() * 1000 for j in jobs]
    failed = sum(1 for j in jobs if j.outcome != "completed")
    # 2. Accept -> start with an idle runner, one job at a time.
    idle = []
    for i in range(20):
        with httpx.Client(timeout=60, trust_env=False) as c:
            job_id = c.post(url, json={**BODY, "seed": 5000 + i}).json()["id"]
        [j] = wait_done(owner, [job_id])
        idle.append((j.started_at - j.created_at).total_seconds() * 1000)
    # 3. Kill the runner holding jobs; time until they completed elsewhere.
    (control / "hold").touch()
    _, held = posts(url, 8, 9000)
    time.sleep(1.0)
    pids = runner_pids("musicfn")
    killed_at = time.perf_counter()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    (control / "hold").unlink()
    after = wait_done(owner, held)
    recovery = time.perf_counter() - killed_at
    recovered = sum(1 for j in after if j.outcome == "completed")

    print(f"{'measure':<58} {'value':>14}")
    print(f"{'POST -> 202, 20 clients: p50 / p99 (ms)':<58} "
          f"{statistics.median(lat):>6.1f} / {pct(lat, 0.99):.1f}")
    print(f"{'bare Serve POST, 20 clients: p50 / p99 (ms)':<58} "
          f"{statistics.median(bare_lat):>6.1f} / {pct(bare_lat, 0.99):.1f}  "
          f"(ratio p50 {statistics.median(lat) / statistics.median(bare_lat):.2f})")
    print(f"{'accept -> start under load: p50 / p99 (ms)':<58} "
          f"{statistics.median(starts):>6.1f} / {pct(starts, 0.99):.1f}")
    print(f"{'accept -> start, idle runner: p50 / p99 (ms)':<58} "
          f"{statistics.median(idle):>6.1f} / {pct(idle, 0.99):.1f}  (target p50 <= 50)")
    print(f"{f'{args.jobs} x 2 s synth jobs, 20 clients: jobs/s':<58} "
          f"{args.jobs / elapsed:>6.2f}  ({failed} not completed)")
    print(f"{f'runner SIGKILL -> 8 held jobs completed (lease {args.lease:g} s)':<58} "
          f"{recovery:>6.1f} s  ({recovered}/8 completed)")
    print("CPU ms per job, by process: " + ", ".join(f"{k} {v}" for k, v in per_job.items()))


if __name__ == "__main__":
    main()
