"""Ingress benchmark, measured side by side in one run on a local Ray cluster:

- added latency of ``GET /v1/generations/{id}`` (p50/p99) vs a bare Serve endpoint,
- requests/s of both (8 client threads),
- end-to-end overhead beyond engine time for an 8 s synth clip (target <= 0.3 s).

    .venv/bin/python bench/ingress.py [--requests 300] [--clips 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from deployments.app import build_app
from musicfn.ports import free_port_block
from musicfn.priority import ray_worker_niceness_env
from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Bare:
    """The floor: a Serve HTTP endpoint that returns a small JSON document."""

    async def __call__(self, request: Any) -> dict[str, str]:
        return {"id": "x", "status": "completed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _latencies(client: httpx.Client, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def _throughput(url: str, n: int, threads: int = 8) -> float:
    with httpx.Client(timeout=30, trust_env=False) as client:
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: client.get(url).raise_for_status(), range(n)))
        return n / (time.perf_counter() - t)


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clips", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s3_port = free_port_block(5, gap=10000)
        s3 = EmbeddedS3(Path(tmp) / "s3", s3_port, "bench", "bench-secret").start()
        try:
            settings = Settings(embedded_s3_port=s3_port, s3_access_key="bench",
                                s3_secret_key="bench-secret", data_dir=Path(tmp))
            http_port = _free_port()
            ray_worker_niceness_env()  # as the service starts Ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
            serve.run(build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.5,
                                 "batch_wait_timeout_s": 0.0,
                                 "settings": settings.model_dump()}),
                      name="musicfn", route_prefix="/")
            serve.run(Bare.bind(), name="bare", route_prefix="/bare")  # type: ignore[attr-defined]
            base = f"http://127.0.0.1:{http_port}"
            run(base, args.requests, args.clips)
        finally:
            serve.shutdown()
            ray.shutdown()
            s3.stop()


def run(base: str, n: int, clips: int) -> None:
    with httpx.Client(base_url=base, timeout=120, trust_env=False) as client:
        body = {"prompt": "bench clip", "duration_s": 8.0, "engine": "synth", "bpm": 120}
        # Warm-up: first generation starts workers.
        client.post("/v1/generations", params={"wait": 120}, json=body).raise_for_status()
        overheads, e2e = [], []
        for i in range(clips):
            t = time.perf_counter()
            r = client.post("/v1/generations", params={"wait": 120}, json={**body, "seed": i})
            total = time.perf_counter() - t
            rec = r.json()["record"]
            if rec["status"] != "completed":
                raise SystemExit(f"generation failed: {rec['error']}")
            e2e.append(total)
            overheads.append(total - rec["timings"]["generate"])
        job = rec["id"]
        get_url = f"{base}/v1/generations/{job}"
        _latencies(client, get_url, 20)
        _latencies(client, f"{base}/bare", 20)
        ingress = _latencies(client, get_url, n)
        bare = _latencies(client, f"{base}/bare", n)
    ingress_rps = _throughput(get_url, n)
    bare_rps = _throughput(f"{base}/bare", n)
    p50_i, p99_i = statistics.median(ingress), _pct(ingress, 0.99)
    p50_b, p99_b = statistics.median(bare), _pct(bare, 0.99)
    print(f"{'measure':<44} {'value':>10}")
    print(f"{'GET /v1/generations/{id} p50 / p99 (ms)':<44} {p50_i:>6.1f} / {p99_i:.1f}")
    print(f"{'bare Serve endpoint p50 / p99 (ms)':<44} {p50_b:>6.1f} / {p99_b:.1f}")
    print(f"{'added latency p50 / p99 (ms)':<44} {p50_i - p50_b:>6.1f} / {p99_i - p99_b:.1f}")
    print(f"{'requests/s ingress GET vs bare (8 threads)':<44} {ingress_rps:>6.0f} / "
          f"{bare_rps:.0f}  (ratio {ingress_rps / bare_rps:.2f})")
    med = statistics.median(overheads)
    print(f"{'8 s synth clip: end-to-end median (s)':<44} {statistics.median(e2e):>6.2f}")
    print(f"{'  overhead beyond engine time, median (s)':<44} {med:>6.2f}  "
          f"(target <= 0.30: {'met' if med <= 0.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
