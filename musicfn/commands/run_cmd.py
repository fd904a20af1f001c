"""``musicfn run``: start the whole service on this machine and make one real generation.

Starts (or reuses) the embedded S3 when no endpoint is configured, a local Ray cluster, and
Serve with the musicfn application adapted to the machine: MusicGen on CUDA when a GPU and the
model's weights are here, otherwise the synth engine on the CPU (it prints which and why). Then
it submits one example generation over HTTP, prints the object key, the analysis and the
catalogue row, and serves until Ctrl-C (``--once`` exits after the example).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import threading
import time
from typing import Any

import httpx

from musicfn.errors import ConfigurationError
from musicfn.settings import Settings, get_settings
from storage.backends import open_storage

EXAMPLE = {"prompt": "warm lofi hip hop beat with soft piano chords", "duration_s": 8.0,
           "bpm": 84, "key": "A minor", "seed": 42}


def choose_engine(requested: str, model: str, device: str) -> tuple[dict[str, Any], str]:
    """The MusicGen app args for this machine, and one line saying why."""
    if requested == "synth":
        return {"engine": "synth", "device": "cpu"}, "synth engine: asked for with --engine"
    import torch

    has_gpu = torch.cuda.is_available() and device != "cpu"
    weights = _weights_available(model)
    if requested == "audiocraft":
        dev = "cuda" if has_gpu else "cpu"
        return ({"engine": "audiocraft", "model": model, "device": dev},
                f"audiocraft engine ({model}) on {dev}: asked for with --engine")
    if has_gpu and weights:
        return ({"engine": "audiocraft", "model": model, "device": "cuda"},
                f"audiocraft engine ({model}) on cuda: a GPU and the weights are here")
    why = "no CUDA GPU on this machine" if not has_gpu else f"weights of {model} not found " \
        "locally (offline; set HF_HOME or pass --model DIR)"
    return {"engine": "synth", "device": "cpu"}, f"synth engine on cpu: {why}"


def _weights_available(model: str) -> bool:
    from pathlib import Path

    if Path(model).is_dir():
        return (Path(model) / "state_dict.bin").exists()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(model, "state_dict.bin")
    return isinstance(found, str)


def cmd_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    with open_storage(settings) as storage:
        if storage.embedded is not None:
            state = "reused" if storage.embedded.reused else "started"
            print(f"embedded S3 {state}: {storage.embedded.endpoint_url} "
                  f"(data: {storage.embedded.data_dir})")
        else:
            print(f"S3: {settings.endpoint_url}")
        engine_args, why = choose_engine(args.engine, args.model, settings.device)
        print(why)
        base = _start_service(settings, engine_args)
        try:
            _example(base, settings)
            if args.once:
                return 0
            print(f"musicfn serving on {base} (OpenAPI: {base}/docs); Ctrl-C to stop")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
            print("stopping")
            return 0
        finally:
            _stop_service()


def _start_service(settings: Settings, engine_args: dict[str, Any]) -> str:
    import ray
    from ray import serve

    from deployments.app import build_app

    # Worker logs stay in Ray's session directory (/tmp/ray/session_latest/logs), not here.
    ray.init(address="local", namespace=settings.ray_namespace, include_dashboard=False,
             logging_level=logging.WARNING, configure_logging=True, log_to_driver=False)
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    print(f"starting Serve on {settings.http_host}:{settings.http_port} ...")
    serve.run(build_app({**engine_args, "batch_wait_timeout_s": 0.02}), name="musicfn",
              route_prefix="/")
    return f"http://{settings.http_host}:{settings.http_port}"


def _stop_service() -> None:
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()  # type: ignore[no-untyped-call]


def _example(base: str, settings: Settings) -> None:
    headers = {}
    if settings.api_key is not None:
        headers["x-api-key"] = settings.api_key.get_secret_value()
    with httpx.Client(base_url=base, timeout=300, trust_env=False) as client:
        r = client.post("/v1/generations", params={"wait": 120}, json=EXAMPLE, headers=headers)
        if r.status_code >= 300:
            raise ConfigurationError(f"example generation failed: HTTP {r.status_code} "
                                     f"{r.text[:300]}")
        deadline = time.monotonic() + 600
        while r.json()["status"] in ("pending", "processing") and time.monotonic() < deadline:
            time.sleep(1)
            r = client.get(r.headers["location"], headers=headers)
        rec = r.json()["record"]
        if rec["status"] != "completed":
            raise ConfigurationError(f"example generation ended {rec['status']}: "
                                     f"{rec.get('error')}")
        s = rec["summary"]
        print(f"generated {rec['id']} with engine {rec['engine']} ({rec['model']})")
        print(f"object:    s3://{settings.bucket}/{rec['audio_key']}")
        print(f"analysis:  {rec['audio']['duration_s']:.2f} s, {s['bpm']} BPM, "
              f"key {s['key']} {s['mode']}, {s['lufs']} LUFS, true peak "
              f"{s['true_peak_dbtp']} dBTP")
        row = {k: rec[k] for k in ("id", "status", "created_at", "completed_at", "prompt",
                                   "engine", "seed", "audio_key", "timings")}
        print("catalogue row:")
        print(json.dumps(row, indent=2))


def register(sub: Any) -> None:
    """Add ``run`` to the ``musicfn`` parser."""
    p = sub.add_parser("run", help="start musicfn (S3, Ray, Serve) and make one generation")
    p.add_argument("--once", action="store_true", help="exit after the example generation")
    p.add_argument("--engine", choices=("auto", "audiocraft", "synth"), default="auto")
    p.add_argument("--model", default="facebook/musicgen-small",
                   help="MusicGen name or a local checkpoint directory")
    p.set_defaults(func=cmd_run)
