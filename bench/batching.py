"""Batching benchmark through Ray Serve: throughput by batch size, concurrent vs sequential.

Uses a random-weight MusicGen (``engines.tiny_model``, built into a temp dir or taken from
``--model-dir``, loaded with get_pretrained) on the CPU.

* sweep (every size): for each batch size B in ``--batches`` (1 4 8), B concurrent requests of
  ``--sweep-clip`` seconds (1 s) are gathered into one batch by ``@serve.batch``; prints the
  batch Serve formed, wall time, audio-seconds per wall second and tokens/s side by side, and
  the same per CPU-second of the replica process (robust on a shared machine).
* ``--size tiny`` (default) also: 8 concurrent vs 8 sequential requests for 2 s and 8 s clips
  (throughput ratio, p50 latency), the replica's model-load time, and its RSS after 5 vs 50
  requests.

A token here is one frame of the 50 Hz EnCodec stream (20 ms of audio, one entry from each of
the 4 codebooks); a clip of F frames takes F + 3 decoding steps (the delay pattern).

    .venv/bin/python bench/batching.py [--size tiny|small|medium] [--model-dir DIR]
        [--batches 1 4 8] [--sweep-clip 1] [--clips 2 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
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

APP = "bench-batching"
FRAME_RATE = 50  # EnCodec frames (tokens) per second of audio, every MusicGen size


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


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def replica_pid() -> int | None:
    """The PID of this bench's MusicGen replica: a descendant of this process (our own
    Ray cluster) whose title names the deployment."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"ServeReplica:{APP}:MusicGen".encode() not in title:
            continue
        pid = int(entry.name)
        while pid > 1:
            pid = _parent(pid)
            if pid == me:
                return int(entry.name)
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its threads (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sweep(redeploy: Any, batches: list[int], clip: float) -> None:
    """Print throughput for each batch size: ``b`` concurrent requests of ``clip`` seconds.

    ``redeploy(b)`` sets the replica's max_batch_size to ``b`` (a user_config change: Serve
    reconfigures the running replica, no reload), so a batch closes as soon as it is full.
    """
    frames = math.ceil(clip * FRAME_RATE)
    print(f"\nbatch sweep, {clip:g} s clips ({frames} tokens = {frames + 3} steps each):")
    print("(per CPU-s: divided by the replica process's CPU time, which other load on the "
          "machine does not inflate as it does wall time)")
    print(f"{'batch':>5} {'formed':>6} {'wall':>8} {'audio-s/s':>10} {'tokens/s':>9} "
          f"{'steps/s':>8} {'CPU s':>7} {'audio-s/CPU-s':>13} {'tokens/CPU-s':>12} "
          f"{'vs batch 1':>10} {'loadavg':>7}")
    base = None
    for b in batches:
        handle = redeploy(b)
        pid = replica_pid()
        cpu0 = cpu_seconds(pid)
        total, _, formed = concurrent(handle, b, clip)
        cpu = cpu_seconds(pid) - cpu0 or float("nan")
        per_cpu = b * clip / cpu
        base = base or per_cpu
        print(f"{b:>5d} {max(formed):>6d} {total:>7.2f}s {b * clip / total:>10.3f} "
              f"{b * frames / total:>9.1f} {(frames + 3) / total:>8.1f} {cpu:>7.1f} "
              f"{per_cpu:>13.3f} {b * frames / cpu:>12.1f} {per_cpu / base:>9.2f}x "
              f"{os.getloadavg()[0]:>7.1f}")


def compare(handle: Any, clips: list[float], batch: int) -> None:
    """The tiny-model report: concurrent vs sequential, then replica RSS growth."""
    print(f"\n{'clip':>6} {'seq total':>10} {'conc total':>11} {'ratio':>6} "
          f"{'p50 seq':>8} {'p50 conc':>9} {'batches':>10}")
    for clip in clips:
        seq_total, seq_lat = sequential(handle, batch, clip)
        conc_total, conc_lat, batches = concurrent(handle, batch, clip)
        print(f"{clip:>5.0f}s {seq_total:>9.2f}s {conc_total:>10.2f}s "
              f"{seq_total / conc_total:>5.1f}x {statistics.median(seq_lat):>7.2f}s "
              f"{statistics.median(conc_lat):>8.2f}s {max(batches):>10d}")

    # Memory: RSS after 5 requests vs after 50 (fresh counts from here on).
    done = 0

    def run(n: int) -> None:
        nonlocal done
        for start in range(0, n, batch):
            count = min(batch, n - start)
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
    print("RSS series (requests: MiB): " + ", ".join(f"{n}: {mib:.1f}" for n, mib in series))


def app_config(model_dir: Path, num_cpus: float, max_batch_size: int, wait_s: float,
               max_duration_s: float, port: int) -> dict[str, Any]:
    """A Serve config with the MusicGen app on the CPU (one replica) and this batching."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": APP, "route_prefix": f"/{APP}",
            "import_path": "deployments.musicgen:build_app",
            "args": {"model": str(model_dir), "device": "cpu", "num_cpus": num_cpus,
                     "max_ongoing_requests": 64},
            "deployments": [{"name": "MusicGen", "user_config": {
                "max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s,
                "limits": {"max_duration_s": max_duration_s}}}],
        }],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    from engines.tiny_model import DEFAULT_SIZE, SIZES

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default=DEFAULT_SIZE,
                        help="random-weight architecture (engines.tiny_model.SIZES)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a checkpoint dir from `musicfn make-tiny-model` (skips the build)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--sweep-clip", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--clips", type=float, nargs="+", default=[2.0, 8.0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-cpus", type=float, default=1.0,
                        help="the replica's CPUs (torch uses this many threads)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from deployments.serve_config import deploy_config
    from engines.tiny_model import make_tiny_model
    from musicfn.ports import free_port_block

    ray.init(num_cpus=max(2, math.ceil(args.num_cpus)), include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    port = free_port_block()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir
            if model_dir is None:
                started = time.perf_counter()
                model_dir = make_tiny_model(Path(tmp) / f"{args.size}-musicgen", size=args.size)
                print(f"built the random {args.size} model in "
                      f"{time.perf_counter() - started:.1f} s")

            def redeploy(max_batch_size: int, wait_s: float = 5.0) -> Any:
                # Through a Serve config (as serve_config.yaml): a user_config-only change
                # reconfigures the running replica in place; serve.run would restart it.
                deploy_config(app_config(model_dir, args.num_cpus, max_batch_size, wait_s,
                                         max([args.sweep_clip, *args.clips, 2.0]), port))
                handle = serve.get_app_handle(APP)
                deadline = time.monotonic() + 120
                while handle.stats.remote().result()["max_batch_size"] != max_batch_size:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the replica never took the new user_config")
                    time.sleep(0.1)
                return handle

            started = time.perf_counter()
            handle = redeploy(1)
            deploy_s = time.perf_counter() - started
            stats = handle.stats.remote().result()
            info = handle.describe.remote().result()
            print(f"model {info['model']} ({args.size}) on {info['device']}, {info['dtype']}, "
                  f"replica num_cpus {args.num_cpus:g}")
            print(f"replica model load (engine __init__): {stats['load_time_s']:.2f} s; "
                  f"deploy until RUNNING: {deploy_s:.2f} s")
            _timed(handle, {"prompt": "warm up", "duration_s": min(1.0, args.sweep_clip),
                            "seed": 0})
            sweep(redeploy, args.batches, args.sweep_clip)
            if args.size == "tiny":
                compare(redeploy(args.batch, 0.05), args.clips, args.batch)
            load_times = handle.stats.remote().result()["load_time_s"]
            if load_times != stats["load_time_s"]:
                print("note: the replica restarted during the sweep (its load time changed)")
            serve.delete(APP)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
