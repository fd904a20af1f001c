"""Batching benchmark: 8 concurrent vs 8 sequential requests through Ray Serve.

Uses the tiny random-weight MusicGen (built into a temp dir, loaded with get_pretrained) on the
CPU, for 2 s and 8 s clips. Prints the throughput ratio, p50 latency per request, the replica's
model-load time, and the replica's RSS after 5 vs after 50 requests.

    .venv/bin/python bench/batching.py [--clips 2 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# bench/catalogue.py would shadow the PyPI `catalogue` package (spaCy -> audiocraft imports it):
# take this script's directory off the path and put the project root on it instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def _timed(handle: Any, request: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = handle.generate.remote(request).result()
    return result, time.perf_counter() - started


def sequential(handle: Any, n: int, duration: float) -> tuple[float, list[float]]:
    """Total wall time and per-request latencies for ``n`` requests one after another."""
    started = time.perf_counter()
    latencies = [
        _timed(handle, {"prompt": f"seq {i}", "duration_s": duration, "seed": i})[1]
        for i in range(n)
    ]
    return time.perf_counter() - started, latencies


def concurrent(handle: Any, n: int, duration: float) -> tuple[float, list[float], list[int]]:
    """Total wall time, latencies and batch sizes for ``n`` requests sent at once."""
    started = time.perf_counter()
    responses = [
        handle.generate.remote({"prompt": f"conc {i}", "duration_s": duration, "seed": i})
        for i in range(n)
    ]
    latencies, batches = [], []
    for r in responses:
        result = r.result()
        latencies.append(time.perf_counter() - started)
        batches.append(result.batch_size)
    return time.perf_counter() - started, latencies, batches


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=float, nargs="+", default=[2.0, 8.0])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from deployments.musicgen import build_app, deploy
    from engines.tiny_model import make_tiny_model
    from musicfn.ports import free_port_block

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port_block()})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny-musicgen")
        started = time.perf_counter()
        handle = deploy(build_app({
            "model": str(model_dir), "device": "cpu", "num_cpus": 1,
            "max_batch_size": args.batch, "batch_wait_timeout_s": 0.05,
            "max_duration_s": max(args.clips),
        }), name="bench-batching")
        deploy_s = time.perf_counter() - started
        stats = handle.stats.remote().result()
        print(f"replica model load (engine __init__): {stats['load_time_s']:.2f} s; "
              f"serve.run until ready: {deploy_s:.2f} s")
        _timed(handle, {"prompt": "warm up", "duration_s": 1.0, "seed": 0})

        print(f"\n{'clip':>6} {'seq total':>10} {'conc total':>11} {'ratio':>6} "
              f"{'p50 seq':>8} {'p50 conc':>9} {'batches':>10}")
        for clip in args.clips:
            seq_total, seq_lat = sequential(handle, args.batch, clip)
            conc_total, conc_lat, batches = concurrent(handle, args.batch, clip)
            print(f"{clip:>5.0f}s {seq_total:>9.2f}s {conc_total:>10.2f}s "
                  f"{seq_total / conc_total:>5.1f}x {statistics.median(seq_lat):>7.2f}s "
                  f"{statistics.median(conc_lat):>8.2f}s {max(batches):>10d}")

        # Memory: RSS after 5 requests vs after 50 (fresh counts from here on).
        done = 0

        def run(n: int) -> None:
            nonlocal done
            for start in range(0, n, args.batch):
                count = min(args.batch, n - start)
                responses = [
                    handle.generate.remote({"prompt": f"mem {done + i}", "duration_s": 2.0,
                                            "seed": done + i})
                    for i in range(count)
                ]
                for r in responses:
                    r.result()
                done += count

        series = []
        for target in (5, 10, 20, 30, 40, 50, 100):
            run(target - done)
            series.append((target, handle.stats.remote().result()["rss_bytes"] / 2**20))
        rss = dict(series)
        print(f"\nreplica RSS after 5 requests: {rss[5]:.1f} MiB, after 50: {rss[50]:.1f} MiB "
              f"(growth {rss[50] - rss[5]:+.1f} MiB); after 100: {rss[100]:.1f} MiB")
        print("RSS series (requests: MiB): "
              + ", ".join(f"{n}: {mib:.1f}" for n, mib in series))
        serve.delete("bench-batching")
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
