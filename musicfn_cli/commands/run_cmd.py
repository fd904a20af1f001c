"""``musicfn run``: start the whole service on this machine and make one real generation.

Starts (or reuses) the embedded S3 when no endpoint is configured, a local Ray cluster, and
Serve with ``serve_config.yaml`` itself (the production description: the same deployments,
limits, autoscaling and health checks), overriding only what this machine needs: MusicGen on
CUDA when a GPU and the model's weights are here, otherwise the synth engine on the CPU with
MusicGen's GPU reservation dropped (it prints the config file, every override and why, and the
deployments' effective ``max_ongoing_requests``). Then it submits one example generation over
HTTP, prints the object key, the analysis and the catalogue row, and serves until Ctrl-C
(``--once`` exits after the example).

Start-up overlaps what can overlap: the embedded S3 (started, then kept alive by
``storage.s3_supervisor``), the serve config's validation and the local weights check run in
threads while Ray starts; the GPU check asks Ray (no torch import in this process). It prints
how long each phase took (``start-up phase ...`` lines, then the total) once the service is
ready, and the time to the first track after the example.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from musicfn.errors import ConfigurationError
from musicfn.settings import Settings, get_settings
from musicfn_cli.commands.run_phases import DeployWatch, Phases
from musicfn_cli.commands.run_service import (
    auth_headers,
    start_catalogue_owner,
    start_ray,
    start_s3,
    stop_service,
    wait_healthy,
)
from storage.embedded_s3 import EmbeddedS3
from storage.s3_supervisor import S3Supervisor

T = TypeVar("T")

EXAMPLE = {"prompt": "warm lofi hip hop beat with soft piano chords", "duration_s": 8.0,
           "bpm": 84, "key": "A minor", "seed": 42}


def choose_engine(requested: str, model: str, device: str, *, gpus: float,
                  weights: bool) -> tuple[dict[str, Any], str]:
    """The MusicGen app args for this machine, and one line saying why: ``gpus`` is the Ray
    cluster's GPU count (Ray detects CUDA devices itself), ``weights`` whether the model's
    weights are here."""
    if requested == "synth":
        return {"engine": "synth", "device": "cpu"}, "synth engine: asked for with --engine"
    has_gpu = gpus > 0 and device != "cpu"
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


def weights_available(model: str) -> bool:
    """True when the MusicGen checkpoint ``model`` (a directory or a Hub name) is local."""
    if Path(model).is_dir():
        return (Path(model) / "state_dict.bin").exists()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(model, "state_dict.bin")
    return isinstance(found, str)


def default_config_path() -> Path:
    """The repository's ``serve_config.yaml`` (beside the ``deployments`` package)."""
    import deployments

    return Path(deployments.__file__).resolve().parents[1] / "serve_config.yaml"


def cmd_run(args: argparse.Namespace) -> int:
    """Start S3, Ray and Serve, make the example generation, serve until Ctrl-C."""
    phases = Phases()
    phases.add("python start + imports", phases.t0, time.monotonic())
    settings = get_settings()
    config_path = Path(args.config) if args.config is not None else default_config_path()
    if not config_path.is_file():
        raise ConfigurationError(f"serve config {config_path} not found: pass --config PATH "
                                 "(the production description, serve_config.yaml)")
    embedded: list[EmbeddedS3] = []
    supervisor: S3Supervisor | None = None
    try:
        with phases.phase("import ray"):  # here, so that two threads never import it at once
            import ray  # noqa: F401
        with ThreadPoolExecutor(3, thread_name_prefix="musicfn-start") as pool:
            s3 = pool.submit(_timed, phases, "object store (S3 + bucket)",
                             lambda: start_s3(settings, embedded))
            production = pool.submit(_timed, phases, "serve config (load + validate)",
                                     lambda: _load_config(config_path, None))
            weights = pool.submit(_timed, phases, "engine weights check",
                                  lambda: args.engine != "synth" and weights_available(args.model))
            with phases.phase("ray init"):
                gpus = start_ray(settings)
            pool.submit(_timed, phases, "catalogue owner (started early)",
                        lambda: start_catalogue_owner(settings))
            s3.result()
            if embedded:  # from now on SeaweedFS is restarted whenever it dies
                supervisor = S3Supervisor(embedded[0]).start()
            engine_args, why = choose_engine(args.engine, args.model, settings.device,
                                             gpus=gpus, weights=weights.result())
            print(why)
            base = _start_service(settings, config_path, engine_args, production, phases)
        ready = phases.elapsed()
        for line in phases.lines("ready (/healthz 200)"):
            print(line)
        _example(base, settings)
        print(f"start-up: ready in {ready:.2f} s, first track in {phases.elapsed():.2f} s")
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
        if supervisor is not None:
            supervisor.stop()
        try:
            stop_service()
        finally:  # the S3 server is a process of its own: never left behind
            for server in embedded:
                server.stop()


def _timed(phases: Phases, name: str, work: Callable[[], T]) -> T:
    with phases.phase(name):
        return work()


def _load_config(config_path: Path, overrides: Any) -> dict[str, Any]:
    from deployments.serve_config import load_serve_config

    return load_serve_config(config_path, overrides=overrides)


def _start_service(settings: Settings, config_path: Path, engine_args: dict[str, Any],
                   production_config: Future[dict[str, Any]], phases: Phases) -> str:
    """Deploy the serve config adapted to this machine (Ray is up); the base URL."""
    import ray

    from deployments.serve_config import EngineOverrides, deploy_config

    overrides = EngineOverrides.from_args(
        engine_args,
        cluster_cpus=float(ray.cluster_resources().get("CPU", 0.0)))  # type: ignore[no-untyped-call]
    try:
        production = production_config.result()
    except (ImportError, AttributeError):  # an import racing Ray's start-up: load it here
        production = _load_config(config_path, None)
    config = _load_config(config_path, overrides)
    print(f"serve config: {config_path}")
    changes = _config_changes(production, config)
    # MUSICFN_HTTP_HOST / MUSICFN_HTTP_PORT, when set, replace the file's http_options.
    http_host = settings.http_host if "http_host" in settings.model_fields_set else None
    http_port = settings.http_port if "http_port" in settings.model_fields_set else None
    http = production.get("http_options") or {}
    changes += [f"http_options.{key}: {http.get(key)!r} -> {value!r} (MUSICFN_HTTP_"
                f"{key.upper()})" for key, value in (("host", http_host), ("port", http_port))
                if value is not None and value != http.get(key)]
    print("overrides for this machine:" if changes else "overrides for this machine: none")
    for change in changes:
        print(f"  {change}")
    print("deploying (Serve, then the application) ...")
    with phases.phase("serve deploy (all applications RUNNING)"):
        base = deploy_config(config, http_host=http_host, http_port=http_port,
                             on_status=DeployWatch(phases))
    _print_deployments(config)
    with phases.phase("first /healthz 200"):
        wait_healthy(base, settings)
    return base


def _config_changes(before: Any, after: Any, where: str = "") -> list[str]:
    """``path: old -> new`` for every leaf that differs between two config trees."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return [c for key in dict.fromkeys([*before, *after])
                for c in _config_changes(before.get(key), after.get(key),
                                        f"{where}.{key}" if where else str(key))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [c for i, (b, a) in enumerate(zip(before, after, strict=True))
                for c in _config_changes(b, a, f"{where}[{_label(a, i)}]")]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def _label(item: Any, index: int) -> str:
    return str(item["name"]) if isinstance(item, Mapping) and "name" in item else str(index)


def _print_deployments(config: dict[str, Any]) -> None:
    """Each deployment's live status and max_ongoing_requests, as Serve applied them."""
    from ray import serve

    from deployments.serve_config import deployment_configs

    statuses = serve.status().applications
    for app in config.get("applications") or []:
        name = app.get("name", "default")
        status = statuses.get(name)
        print(f"application {name}: {status.status.value if status else 'unknown'}")
        for dname, effective in deployment_configs(name).items():
            dstatus = status.deployments.get(dname) if status else None
            print(f"  {dname}: {dstatus.status.value if dstatus else 'unknown'}, "
                  f"max_ongoing_requests {effective.get('max_ongoing_requests')}")


def _example(base: str, settings: Settings) -> None:
    headers = auth_headers(settings)
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
    p.add_argument("--config", type=Path, default=None, metavar="PATH",
                   help="the Serve config to deploy (default: the repository's "
                   "serve_config.yaml); only engine/model/device are adapted to this machine")
    p.set_defaults(func=cmd_run)
