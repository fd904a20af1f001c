"""Object-store trigger benchmark on a local stack (SeaweedFS, Ray, Serve, synth engine):

- latency from upload to indexed row via the webhook (p50/p90),
- the same via the service's poller (interval 1 s; latency includes the wait for the poll),
- sustained events/s for 200 small uploads announced by webhook (one event each).

    .venv/bin/python bench/events.py [--latency 10] [--burst 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from deployments.app import build_app
from musicfn.settings import Settings
from storage.catalogue_actor import catalogue_actor
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.events_support import notification, wav_bytes
from tests.support import free_port_block

TOKEN = "bench-token"


def _wait_rows(owner: Any, keys: list[str], timeout: float = 900) -> float:
    """Seconds until every key has a processed event record."""
    deadline = time.monotonic() + timeout
    pending = set(keys)
    while pending:
        done = {k for k in pending if ray.get(owner.tracks_by_source.remote(k))}
        pending -= done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} uploads not indexed")
        if pending:
            time.sleep(0.05)
    return time.monotonic()


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=10, help="uploads per latency run")
    parser.add_argument("--burst", type=int, default=200, help="uploads in the burst")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s3_port = free_port_block(5, gap=10000)
        s3 = EmbeddedS3(Path(tmp) / "s3", s3_port, "bench", "bench-secret").start()
        try:
            base = Settings(embedded_s3_port=s3_port, s3_access_key="bench",
                            s3_secret_key="bench-secret", data_dir=Path(tmp),
                            webhook_token=TOKEN, poll_interval_s=1.0, event_concurrency=8)
            http_port = free_port_block()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     namespace="bench")
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
            results: dict[str, Any] = {}
            for mode in ("webhook", "poller"):
                settings = base.model_copy(update={
                    "bucket": f"bench-{mode}", "poller": "on" if mode == "poller" else "off",
                    "catalogue_path": Path(tmp) / f"{mode}.duckdb"})
                serve.run(build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.5,
                                     "settings": settings.model_dump()}),
                          name=mode, route_prefix=f"/{mode}")
                objects = ObjectStore(settings)
                objects.ensure_bucket()
                owner = catalogue_actor(settings.catalogue_file, detached=True,
                                        namespace=settings.ray_namespace)
                url = f"http://127.0.0.1:{http_port}/{mode}/v1/events/s3"
                client = httpx.Client(timeout=60, trust_env=False)
                clip = wav_bytes(seconds=2.0)
                # Warm the audio workers (first analysis in a process).
                objects.put("incoming/a-warm.wav", clip, content_type="audio/wav")
                if mode == "webhook":
                    client.post(url, json=notification(settings.bucket, "incoming/a-warm.wav"),
                                headers={"Authorization": f"Bearer {TOKEN}"})
                print(f"{mode}: warming up", file=sys.stderr, flush=True)
                _wait_rows(owner, ["incoming/a-warm.wav"])
                print(f"{mode}: measuring latency", file=sys.stderr, flush=True)
                lat = []
                for i in range(args.latency):
                    key = f"incoming/lat/{i:04d}.wav"
                    t0 = time.monotonic()
                    etag = objects.put(key, clip, content_type="audio/wav")
                    if mode == "webhook":
                        client.post(url, json=notification(settings.bucket, key, etag),
                                    headers={"Authorization": f"Bearer {TOKEN}"}
                                    ).raise_for_status()
                    lat.append(_wait_rows(owner, [key]) - t0)
                results[f"{mode}_latency_p50_s"] = round(statistics.median(lat), 3)
                results[f"{mode}_latency_p90_s"] = round(_pct(lat, 0.9), 3)
                if mode == "webhook":
                    small = wav_bytes(seconds=0.5)
                    keys = [f"incoming/burst/{i:04d}.wav" for i in range(args.burst)]
                    t0 = time.monotonic()
                    for key in keys:
                        etag = objects.put(key, small, content_type="audio/wav")
                        client.post(url, json=notification(settings.bucket, key, etag),
                                    headers={"Authorization": f"Bearer {TOKEN}"}
                                    ).raise_for_status()
                    accepted = time.monotonic() - t0
                    elapsed = _wait_rows(owner, keys) - t0
                    results["burst_uploads"] = args.burst
                    results["burst_accept_per_s"] = round(args.burst / accepted, 1)
                    results["burst_events_per_s"] = round(args.burst / elapsed, 2)
                client.close()
                serve.delete(mode)
            print(json.dumps(results, indent=2))
        finally:
            serve.shutdown()
            ray.shutdown()
            s3.stop()


if __name__ == "__main__":
    main()
