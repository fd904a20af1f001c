"""Object-store trigger benchmark on a local stack (SeaweedFS, Ray, Serve, synth engine):

- latency from upload to indexed row via the webhook (p50/p90),
- the same via the service's poller (interval 1 s; latency includes the wait for the poll),
- a burst of small uploads, stored first, then each announced by its own webhook POST (MinIO
  sends one record per request, asynchronously: ``--senders`` connections): how fast the
  webhook acknowledges (POSTs/s) and how fast the uploads are processed (first POST to last
  indexed row); where an event's time goes (job timestamps + each sidecar's stage timings),
- the same burst of POSTs to a bare Serve endpoint first (the floor of acknowledging here),
- the previous method for comparison: one client thread that uploads and announces each clip
  in turn (its rate is bounded by the client's own PUT + POST round trips).

    .venv/bin/python bench/events.py [--latency 10] [--burst 200] [--burst-clip 0.5]
                                     [--senders 8] [--sequential 100]

It imports nothing from tests/ (a site-packages ``tests`` package would shadow it).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import numpy as np
import ray
import soundfile as sf
from cpu_use import cpu_profile, cpu_seconds
from ray import serve

from deployments.app import build_app
from musicfn.ports import free_port_block
from musicfn.priority import ray_worker_niceness_env
from musicfn.settings import Settings
from storage.catalogue.actor import catalogue_actor
from storage.catalogue.queries import TrackQuery
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore

TOKEN = "bench-token"
TARGETS = {"webhook_latency_p50_s": (0.144, "<="), "poller_latency_p50_s": (1.149, "<="),
           "burst_accept_per_s": (200, ">="), "burst_events_per_s": (50, ">=")}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
class Bare:
    """The floor: a Serve HTTP endpoint that reads a JSON body and answers 200 (no record,
    no processing): what acknowledging costs in Serve alone on this box."""

    async def __call__(self, request: Any) -> dict[str, int]:
        await request.json()
        return {"accepted": 1}


def wav_bytes(seconds: float, sr: int = 32_000, bpm: float = 100.0, seed: int = 0) -> bytes:
    """A stereo loop (kick-like clicks on the beat over a tone) as 16-bit WAV bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    audio = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    hit = np.exp(-np.arange(int(0.1 * sr)) / (0.02 * sr)) * np.sin(2 * np.pi * 60 *
                                                                  np.arange(int(0.1 * sr)) / sr)
    for start in range(0, t.size, int(sr * 60 / bpm)):
        end = min(t.size, start + hit.size)
        audio[start:end] += 0.6 * hit[: end - start]
    buf = io.BytesIO()
    sf.write(buf, np.stack([audio, audio]).T.astype(np.float32), sr, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def notification(bucket: str, key: str, etag: str = "") -> dict[str, Any]:
    """What MinIO POSTs for one upload (the shape of tests/fixtures/minio-webhook-put.json)."""
    return {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
        "eventTime": "2026-11-22T12:00:00.000Z", "s3": {
            "s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe=""), "eTag": etag, "versionId": "",
                       "contentType": "audio/wav"}}}]}


def _wait_rows(owner: Any, bucket: str, objects: list[tuple[str, str]],
               timeout: float = 900, every: float = 0.01) -> float:
    """Time (monotonic) when every (key, etag) has a finished event record (written with the
    track's row): one catalogue call per check, so waiting does not load the owner."""
    deadline = time.monotonic() + timeout
    pending = list(objects)
    while pending:
        done = ray.get(owner.known_objects.remote(bucket, pending))
        pending = [o for o in pending if o[0] not in done]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} uploads not indexed")
        if pending:
            time.sleep(every)
    return time.monotonic()


def _uploads(owner: Any) -> int:
    """Completed upload tracks in the catalogue (one cheap count)."""
    n: int = ray.get(owner.count.remote(TrackQuery(kind="upload", status="completed")))
    return n


def _wait_count(owner: Any, target: int, timeout: float = 900) -> float:
    """Time (monotonic) when the catalogue holds ``target`` completed uploads."""
    deadline = time.monotonic() + timeout
    while _uploads(owner) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {target} uploads indexed")
        time.sleep(0.25)  # a count costs the owner ~1 ms: do not load what is measured
    return time.monotonic()


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def _breakdown(owner: Any, keys: list[str]) -> dict[str, float]:
    """Median seconds per part of an event: queued (accepted → leased), run (leased →
    finished), and the stages each sidecar records."""
    parts: dict[str, list[float]] = {}
    for key in keys:
        [track] = ray.get(owner.tracks_by_source.remote(key))
        job = ray.get(owner.job.remote(track.id))
        if job is not None and job.started_at is not None:
            parts.setdefault("queued", []).append((job.started_at - job.created_at)
                                                  .total_seconds())
            parts.setdefault("run", []).append((job.updated_at - job.started_at)
                                               .total_seconds())
        for stage, seconds in track.timings.items():
            parts.setdefault(stage, []).append(seconds)
    return {k: round(statistics.median(v), 4) for k, v in parts.items()}


def _announce(client: httpx.Client, url: str, bucket: str, key: str, etag: str) -> float:
    """POST one upload's notification; seconds until the webhook answered."""
    started = time.monotonic()
    client.post(url, json=notification(bucket, key, etag),
                headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    return time.monotonic() - started


def _burst(url: str, objects: ObjectStore, owner: Any, bucket: str, count: int,
           clip_s: float, senders: int) -> dict[str, Any]:
    """``count`` small uploads, stored first, then announced one POST each by ``senders``
    concurrent connections (MinIO delivers asynchronously): the webhook's acknowledging
    rate, and the processing rate from the first POST to the last indexed row."""
    small = wav_bytes(seconds=clip_s)
    keys = [f"incoming/burst/{i:04d}.wav" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        etags = list(pool.map(lambda k: objects.put(k, small, content_type="audio/wav"), keys))
    clients = [httpx.Client(timeout=60, trust_env=False) for _ in range(senders)]
    bare_url = url.split("/webhook/")[0] + "/bare"
    t0 = time.monotonic()
    with ThreadPoolExecutor(senders) as pool:  # the same POSTs to the bare endpoint first
        list(pool.map(lambda i: _announce(clients[i % senders], bare_url, bucket, keys[i],
                                          etags[i]), range(count)))
    bare_per_s = count / (time.monotonic() - t0)
    before = _uploads(owner)
    cpu = cpu_seconds()
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(senders) as pool:
            posts = list(pool.map(lambda i: _announce(clients[i % senders], url, bucket,
                                                      keys[i], etags[i]), range(count)))
        accepted = time.monotonic() - t0
        accept_cpu = cpu_profile(cpu, count)
        done = _wait_count(owner, before + count)
        burst_cpu = cpu_profile(cpu, count)
        _wait_rows(owner, bucket, list(zip(keys, etags, strict=True)))  # each one, to be sure
    finally:
        for c in clients:
            c.close()
    return {"burst_uploads": count, "burst_clip_s": clip_s, "burst_senders": senders,
            "burst_accept_per_s": round(count / accepted, 1),
            "burst_accept_bare_serve_per_s": round(bare_per_s, 1),
            "burst_accept_vs_bare": round(count / accepted / bare_per_s, 2),
            "burst_post_p50_ms": round(1000 * statistics.median(posts), 2),
            "burst_post_p90_ms": round(1000 * _pct(posts, 0.9), 2),
            "burst_events_per_s": round(count / (done - t0), 2),
            "burst_breakdown_s": _breakdown(owner, keys),
            "burst_cpu_ms_per_event_while_accepting": accept_cpu,
            "burst_cpu_ms_per_event": burst_cpu}


def _sequential(client: httpx.Client, url: str, objects: ObjectStore, owner: Any,
                bucket: str, count: int, clip_s: float) -> dict[str, Any]:
    """The previous method: one client thread uploads then announces each clip in turn."""
    small = wav_bytes(seconds=clip_s, seed=1)
    keys = [f"incoming/seq/{i:04d}.wav" for i in range(count)]
    etags, posts = [], []
    before = _uploads(owner)
    t0 = time.monotonic()
    for key in keys:
        etags.append(objects.put(key, small, content_type="audio/wav"))
        posts.append(_announce(client, url, bucket, key, etags[-1]))
    loop_s = time.monotonic() - t0
    done = _wait_count(owner, before + count)
    _wait_rows(owner, bucket, list(zip(keys, etags, strict=True)))
    return {"seq_put_and_post_per_s": round(count / loop_s, 1),
            "seq_accept_per_s": round(count / sum(posts), 1),
            "seq_post_p50_ms": round(1000 * statistics.median(posts), 2),
            "seq_events_per_s": round(count / (done - t0), 2)}


def _run_mode(mode: str, base: Settings, tmp: Path, http_port: int,
              args: argparse.Namespace) -> dict[str, Any]:
    settings = base.model_copy(update={
        "bucket": f"bench-{mode}", "poller": "on" if mode == "poller" else "off",
        "catalogue_path": tmp / f"{mode}.duckdb"})
    serve.run(build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.5,
                         "settings": settings.model_dump()}), name=mode, route_prefix=f"/{mode}")
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    owner = catalogue_actor(settings.catalogue_file, detached=True,
                            namespace=settings.ray_namespace)
    url = f"http://127.0.0.1:{http_port}/{mode}/v1/events/s3"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, Any] = {}
    with httpx.Client(timeout=60, trust_env=False) as client:
        clip = wav_bytes(seconds=2.0)
        warm = objects.put("incoming/a-warm.wav", clip, content_type="audio/wav")
        if mode == "webhook":  # warm the audio workers (first analysis in a process)
            client.post(url, json=notification(settings.bucket, "incoming/a-warm.wav", warm),
                        headers=auth)
        print(f"{mode}: warming up", file=sys.stderr, flush=True)
        _wait_rows(owner, settings.bucket, [("incoming/a-warm.wav", warm)])
        print(f"{mode}: measuring latency", file=sys.stderr, flush=True)
        lat = []
        for i in range(args.latency):
            key = f"incoming/lat/{i:04d}.wav"
            t0 = time.monotonic()
            etag = objects.put(key, clip, content_type="audio/wav")
            if mode == "webhook":
                client.post(url, json=notification(settings.bucket, key, etag),
                            headers=auth).raise_for_status()
            lat.append(_wait_rows(owner, settings.bucket, [(key, etag)]) - t0)
        results[f"{mode}_latency_p50_s"] = round(statistics.median(lat), 3)
        results[f"{mode}_latency_p90_s"] = round(_pct(lat, 0.9), 3)
        if mode == "webhook" and args.burst:
            print(f"{mode}: burst of {args.burst}", file=sys.stderr, flush=True)
            results.update(_burst(url, objects, owner, settings.bucket, args.burst,
                                  args.burst_clip, args.senders))
            if args.sequential:
                print(f"{mode}: {args.sequential} one by one", file=sys.stderr, flush=True)
                results.update(_sequential(client, url, objects, owner, settings.bucket,
                                           args.sequential, args.burst_clip))
    serve.delete(mode)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=10, help="uploads per latency run")
    parser.add_argument("--burst", type=int, default=200, help="uploads in the burst")
    parser.add_argument("--burst-clip", type=float, default=0.5, help="seconds per burst clip")
    parser.add_argument("--senders", type=int, default=8,
                        help="concurrent webhook connections in the burst")
    parser.add_argument("--sequential", type=int, default=100,
                        help="uploads in the one-client-thread PUT+POST loop (0: skip)")
    parser.add_argument("--modes", default="webhook,poller")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s3_port = free_port_block(5, gap=10000)
        s3 = EmbeddedS3(Path(tmp) / "s3", s3_port, "bench", "bench-secret").start()
        try:
            base = Settings(embedded_s3_port=s3_port, s3_access_key="bench",
                            s3_secret_key="bench-secret", data_dir=Path(tmp),
                            webhook_token=TOKEN, poll_interval_s=1.0, event_concurrency=8)
            http_port = free_port_block()
            ray_worker_niceness_env()  # as the service starts Ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     namespace="bench")
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
            serve.run(Bare.bind(), name="bare", route_prefix="/bare")  # type: ignore[attr-defined]
            results: dict[str, Any] = {}
            for mode in args.modes.split(","):
                found = _run_mode(mode, base, Path(tmp), http_port, args)
                print(f"{mode}: {json.dumps(found)}", file=sys.stderr, flush=True)
                results.update(found)
            print(json.dumps(results, indent=2))
            for name, (target, op) in TARGETS.items():
                if name in results:
                    value = results[name]
                    ok = value <= target if op == "<=" else value >= target
                    print(f"{name:<24} {value:>9} target {op} {target:<7} "
                          f"{'ok' if ok else 'MISSED'}")
        finally:
            serve.shutdown()
            ray.shutdown()
            s3.stop()


if __name__ == "__main__":
    main()
