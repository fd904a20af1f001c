"""Cold start of a scale-to-zero MusicGen: replica start -> first generated token, and why.

Part 1 (real Serve): deploys ``deployments.musicgen:build_app`` through the same path as
serve_config.yaml (``deployments.serve_config.deploy_config``) with MusicGen's autoscaling at
``min_replicas: 0`` (the application is RUNNING with no replica), then sends one request and
times: the replica RUNNING (process + imports + weights loaded), its first generated token
(the engine's progress > 0, polled) and the finished clip. Per model it does this twice: with
the checkpoint evicted from the page cache (``posix_fadvise(DONTNEED)`` on its two files only),
and again after Serve scaled the replica back to zero (page cache warm).

Part 2 (this process): what the load is made of, per checkpoint: ``torch.load`` of the LM
file (plain and ``mmap=True``), audiocraft's random init of the model it then overwrites, and
``get_pretrained`` end to end; and ``engines.fast_load.load_musicgen``, which skips that init
(builds the LM on the meta device, ``load_state_dict(assign=True)`` from a memory-mapped file).

Models: ``--sizes tiny small`` built into a temp dir (small takes minutes), or existing dirs with
``--model NAME=DIR`` (repeatable); ``--fp16-copy`` adds a float16-weights copy of each.

    .venv/bin/python bench/cold_start.py --sizes tiny --model small=/tmp/small --fp16-copy
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# A bench/<name>.py named like an installed package would shadow it: take this script's
# directory off the path and put the project root on it instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

APP = "coldstart"
CLIP_S = 1.0
POLL_S = 0.02


def evict(model_dir: Path) -> None:
    """Drop this checkpoint's pages from the page cache (only these files, nobody else's)."""
    for f in model_dir.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def scale_to_zero_config(model_dir: Path, port: int, num_cpus: float) -> dict[str, Any]:
    """A Serve config: the MusicGen app on the CPU with ``min_replicas: 0``."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": APP, "route_prefix": f"/{APP}",
            "import_path": "deployments.musicgen:build_app",
            "args": {"model": str(model_dir), "device": "cpu", "num_cpus": num_cpus,
                     "max_duration_s": 5.0},
            "deployments": [{
                "name": "MusicGen", "num_replicas": "auto",
                "autoscaling_config": {
                    "min_replicas": 0, "initial_replicas": 0, "max_replicas": 1,
                    "target_ongoing_requests": 1,
                    # Short here so the bench sees 1 -> 0 quickly; production: minutes.
                    "look_back_period_s": 2, "downscale_delay_s": 2,
                    "downscale_to_zero_delay_s": 2,
                },
            }],
        }],
    }


def replicas(state: str = "RUNNING") -> int:
    """MusicGen replicas of the bench app in ``state``."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or "MusicGen" not in app.deployments:
        return 0
    counts = app.deployments["MusicGen"].replica_states
    return sum(n for s, n in counts.items() if str(getattr(s, "value", s)) == state)


def wait_for(predicate: Any, timeout_s: float, what: str) -> float:
    """Poll ``predicate`` until true; the perf_counter time it became true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout_s:g} s")
        time.sleep(POLL_S)
    return time.perf_counter()


def one_cold_start(handle: Any) -> dict[str, float]:
    """From zero replicas: request -> replica RUNNING -> first token -> clip done."""
    rid = f"cold-{uuid.uuid4().hex[:12]}"
    t0 = time.perf_counter()
    response = handle.generate.remote(
        {"prompt": "cold start", "duration_s": CLIP_S, "seed": 1, "request_id": rid})
    t_running = wait_for(lambda: replicas() >= 1, 900, "a RUNNING replica")
    t_token = _first_token(handle, rid, response)
    result = response.result()
    t_done = time.perf_counter()
    stats = handle.stats.remote().result()
    return {"running": t_running - t0, "load": stats["load_time_s"],
            "first_token": t_token - t0, "done": t_done - t0,
            "batch": float(result.batch_size)}


def _first_token(handle: Any, rid: str, response: Any) -> float:
    """When the replica first reports progress for ``rid`` (or the clip is done)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = handle.progress.remote(rid).result()
        if progress:
            return time.perf_counter()
        try:
            response.result(timeout_s=POLL_S)
            return time.perf_counter()  # finished between two polls
        except TimeoutError:
            continue
    raise TimeoutError("no first token after 300 s")


def serve_part(models: dict[str, Path], num_cpus: float) -> None:
    """Part 1: scale-from-zero cold starts through real Serve."""
    import ray
    from ray import serve

    from deployments.serve_config import deploy_config
    from musicfn.ports import free_port_block

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        print(f"\n{'model':>14} {'page cache':>10} {'deploy':>7} {'RUNNING':>8} "
              f"{'(load)':>7} {'1st token':>9} {'1 s clip':>9} {'loadavg':>7}")
        port = free_port_block()
        for name, model_dir in models.items():
            started = time.perf_counter()
            deploy_config(scale_to_zero_config(model_dir, port, num_cpus), timeout_s=600)
            deploy_s = time.perf_counter() - started
            if replicas() != 0:
                raise RuntimeError("min_replicas 0 still started a replica at deploy")
            handle = serve.get_app_handle(APP)
            for cache in ("cold", "warm"):
                if cache == "cold":
                    evict(model_dir)
                else:
                    wait_for(lambda: replicas() == 0 and replicas("STOPPING") == 0, 300,
                             "scale to zero")
                m = one_cold_start(handle)
                print(f"{name:>14} {cache:>10} {deploy_s:>6.1f}s {m['running']:>7.1f}s "
                      f"{m['load']:>6.1f}s {m['first_token']:>8.1f}s {m['done']:>8.1f}s "
                      f"{os.getloadavg()[0]:>6.1f}", flush=True)
            serve.delete(APP)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def load_part(models: dict[str, Path]) -> None:
    """Part 2: the load's pieces, in this process (page cache warm)."""
    import torch
    from audiocraft.models import builders
    from audiocraft.models.musicgen import MusicGen
    from omegaconf import OmegaConf

    from engines.fast_load import load_musicgen
    from engines.tiny_model import LM_FILE

    torch.set_num_threads(1)  # like a replica with num_cpus 1
    print(f"\n{'model':>14} {'LM file':>9} {'torch.load':>10} {'mmap':>6} {'rand init':>9} "
          f"{'fast load':>11} {'get_pretrained':>14} {'loadavg':>7}")
    for name, model_dir in models.items():
        lm_file = model_dir / LM_FILE
        t = time.perf_counter()
        pkg = torch.load(lm_file, map_location="cpu")
        plain = time.perf_counter() - t
        t = time.perf_counter()
        torch.load(lm_file, map_location="cpu", mmap=True)
        mmap = time.perf_counter() - t
        cfg = OmegaConf.create(pkg["xp.cfg"])
        cfg.device, cfg.dtype = "cpu", "float32"
        t = time.perf_counter()
        lm = builders.get_lm_model(cfg)
        rand_init = time.perf_counter() - t
        del lm
        t = time.perf_counter()
        load_musicgen(str(model_dir), device="cpu")
        fast = time.perf_counter() - t
        del pkg
        t = time.perf_counter()
        MusicGen.get_pretrained(str(model_dir), device="cpu")
        full = time.perf_counter() - t
        size_mb = lm_file.stat().st_size / 1e6
        print(f"{name:>14} {size_mb:>7.0f}MB {plain:>9.2f}s {mmap:>5.2f}s {rand_init:>8.2f}s "
              f"{fast:>10.2f}s {full:>13.2f}s {os.getloadavg()[0]:>6.1f}", flush=True)


def _half_copy(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` with float16 weights."""
    import torch

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        pkg = torch.load(f, map_location="cpu")
        pkg["best_state"] = {k: v.half() if v.is_floating_point() else v
                             for k, v in pkg["best_state"].items()}
        torch.save(pkg, dst / f.name)
    return dst


def main(argv: list[str] | None = None) -> int:
    """Build or take the models, then run both parts."""
    from engines.tiny_model import SIZES, make_tiny_model

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["tiny"], choices=list(SIZES))
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="an existing checkpoint dir (make-tiny-model), repeatable")
    parser.add_argument("--fp16-copy", action="store_true",
                        help="also measure a float16-weights copy of each model")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="the replica's CPUs")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="musicfn-cold-") as tmp:
        models: dict[str, Path] = {}
        for size in args.sizes:
            t = time.perf_counter()
            models[size] = make_tiny_model(Path(tmp) / size, size=size)
            print(f"built random {size} in {time.perf_counter() - t:.1f} s")
        for item in args.model:
            name, _, path = item.partition("=")
            models[name] = Path(path)
        if args.fp16_copy:
            for name, path in list(models.items()):
                models[f"{name}-fp16"] = _half_copy(path, Path(tmp) / f"{name}-fp16")
        if not args.skip_serve:
            serve_part(models, args.num_cpus)
        if not args.skip_load:
            load_part(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
