"""The MusicGen Serve deployment: one engine (or an LRU of several) per replica, batched.

Requests are validated and checked against the live limits before anything reaches the engine.
Each request becomes one job per stem (or one job); jobs from concurrent requests are gathered
by ``@serve.batch`` and handed to the engine, which runs only jobs with identical generation
params together. ``max_batch_size``, ``batch_wait_timeout_s`` and the limits come from
``user_config`` and change live through ``reconfigure``.

Several models (app args ``models``, ``default_model``, ``max_models_per_replica``) are served
with Ray Serve model multiplexing (``deployments.model_pool``): callers pass the model as
``handle.options(multiplexed_model_id=...)`` so Serve routes to a replica that holds it; a
batch only ever runs jobs of one model together.

Build the application with ``build_app(args)`` (also the ``import_path`` for a Serve config:
``deployments.musicgen:build_app``). A GPU-pinned application on a cluster without GPUs fails
there, at once, with ``NoGpuError`` naming the CPU option.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from deployments import gpu_check
from deployments.faults import FaultInjection
from deployments.model_pool import LoadedModel, ModelPool
from deployments.musicgen_config import (
    MusicGenAppArgs,
    MusicGenUserConfig,
    default_model_of,
    parse_app_args,
)
from deployments.served_models import ModelTable, ReplicaModels
from engines.base import GeneratedAudio, GenerationJob
from engines.loader import Device, EngineSpec, parse_spec
from engines.requests import (
    GenerationRequest,
    GenerationResult,
    Limits,
    StemAudio,
    parse_request,
)
from engines.stems import jobs_for, mix
from musicfn import metrics
from musicfn.errors import (
    ConfigurationError,
    EngineError,
    EngineOverloadedError,
    MusicfnError,
)
from musicfn.logs import configure_json_logging_in_worker
from musicfn.priority import background_executor

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "MusicGen"


@serve.deployment(
    name=DEPLOYMENT_NAME,
    # Production posture: one GPU per replica. build_app() sets 0 for device=cpu.
    ray_actor_options={"num_gpus": 1, "num_cpus": 1},
    max_ongoing_requests=64,
    max_queued_requests=256,
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=120,
)
class MusicGenDeployment:
    """Loads the engine in ``__init__`` (or its models on demand) and serves ``generate``."""

    def __init__(self, spec: Mapping[str, Any], models: Mapping[str, Any] | None = None) -> None:
        configure_json_logging_in_worker()
        started = time.perf_counter()
        self._spec = parse_spec(dict(spec))
        table = None if models is None else ModelTable.model_validate(dict(models))
        self._pool = ModelPool(table, spec=self._spec)
        self._load_time_s = time.perf_counter() - started
        self._limits = Limits()
        self._progress: dict[str, float] = {}
        self._pending_jobs = 0
        self._faults: FaultInjection | None = None
        self._requests = 0
        self._batches: list[int] = []
        log.info("serving %s (default %s) after %.2f s", ", ".join(self._pool.table.models),
                 self._pool.default, self._load_time_s)

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Apply batch size, batch wait and limits from ``user_config`` (live)."""
        try:
            config = MusicGenUserConfig.model_validate(dict(user_config))
        except ValidationError as exc:
            raise ConfigurationError(f"invalid MusicGen user_config: {exc}") from None
        self._limits = config.limits
        self._faults = config.fault_injection
        batcher: Any = self._generate_batch  # serve.batch adds the setters to the method
        batcher.set_max_batch_size(config.max_batch_size)
        batcher.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        log.info("user_config applied: max_batch_size %d, batch_wait_timeout_s %g, limits %s",
                 config.max_batch_size, config.batch_wait_timeout_s,
                 config.limits.model_dump_json())

    async def generate(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationResult:
        """Validate, check limits, generate (batched with concurrent requests) and return audio.

        Raises ``InputError`` subclasses for bad requests (before the engine sees them),
        ``EngineOverloadedError`` when the queue is full or the device ran out of memory.
        """
        req = parse_request(request, self._limits)
        # The request names its model; the multiplexed id (the routing hint) is the fallback.
        name = req.model or serve.get_multiplexed_model_id() or self._pool.default
        model = await self._pool.get(name)
        jobs = jobs_for(req)
        for job in jobs:
            model.engine.validate(job)
        if self._pending_jobs + len(jobs) > self._limits.max_pending_jobs:
            raise EngineOverloadedError(
                f"{self._pending_jobs} jobs already queued (limit "
                f"{self._limits.max_pending_jobs}); retry later",
                code="queue_full",
            )
        self._requests += 1
        self._pending_jobs += len(jobs)
        metrics.set_queue_depth(DEPLOYMENT_NAME, self._pending_jobs)
        try:
            if self._faults is not None:
                await self._faults.hold()
            outputs = await asyncio.gather(*(self._generate_batch((model, job)) for job in jobs))
        finally:
            self._pending_jobs -= len(jobs)
            metrics.set_queue_depth(DEPLOYMENT_NAME, self._pending_jobs)
            if req.request_id is not None:
                self._progress.pop(req.request_id, None)
        audios: list[GeneratedAudio] = []
        for out in outputs:
            if isinstance(out, BaseException):
                raise out
            audios.append(out)
        return self._result(req, model, jobs, audios)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _generate_batch(
        self, items: list[tuple[LoadedModel, GenerationJob]]
    ) -> list[GeneratedAudio | MusicfnError]:
        # Serve splits batches by multiplexed model id; calls without one (or with a hint
        # other than the request's model) may still mix models here: run one model at a time.
        out: list[GeneratedAudio | MusicfnError] = [EngineError("not generated")] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (model, _) in enumerate(items):
            groups.setdefault(model.name, []).append(i)
        for idxs in groups.values():
            model = items[idxs[0]][0]
            done = await self._run(model, [items[i][1] for i in idxs])
            for i, result in zip(idxs, done, strict=True):
                out[i] = result
        return out

    async def _generate(self, model: LoadedModel,
                        jobs: list[GenerationJob]) -> list[GeneratedAudio]:
        """The engine call, on a worker thread; on the CPU, the background-priority thread
        (``musicfn.priority``), so the node's front door is served first."""
        executor = background_executor() if model.info.device == "cpu" else None
        done = await asyncio.get_running_loop().run_in_executor(
            executor, model.engine.generate, jobs, self._on_progress)
        return [*done]

    async def _run(
        self, model: LoadedModel, jobs: list[GenerationJob]
    ) -> list[GeneratedAudio | MusicfnError]:
        self._batches.append(len(jobs))
        del self._batches[:-100]
        metrics.record_batch(len(jobs))
        try:
            # A worker thread keeps the event loop free for health checks and for gathering
            # the next batch while this one runs.
            done = await self._generate(model, jobs)
            metrics.record_audio_seconds(model.info.engine, sum(
                out.audio.shape[-1] / out.sample_rate for out in done))
            return [*done]
        except MusicfnError as exc:
            return [exc] * len(jobs)
        except Exception as exc:
            log.exception("engine failed on a batch of %d (%s)", len(jobs), model.name)
            return [EngineError(f"engine failed: {type(exc).__name__}: {exc}")] * len(jobs)

    def _on_progress(self, request_ids: Sequence[str], fraction: float) -> None:
        for rid in request_ids:
            self._progress[rid] = fraction

    def _result(self, req: GenerationRequest, model: LoadedModel, jobs: list[GenerationJob],
                audios: list[GeneratedAudio]) -> GenerationResult:
        if req.seed is None:  # parse_request always assigns one
            raise EngineError("internal error: request reached the engine without a seed")
        stems = None
        if req.stems:
            stems = {
                job.stem: StemAudio(prompt=job.prompt, seed=job.seed, audio=out.audio)
                for job, out in zip(jobs, audios, strict=True)
                if job.stem is not None
            }
            audio = mix([out.audio for out in audios])
        else:
            audio = audios[0].audio
        return GenerationResult(
            request_id=req.request_id,
            engine=model.info.engine,
            model=model.name,
            seed=req.seed,
            sample_rate=audios[0].sample_rate,
            audio=audio,
            prompt=jobs[0].prompt if not req.stems else req.prompt,
            duration_s=req.duration_s,
            params=req.params,
            stems=stems,
            batch_size=max(out.batch_size for out in audios),
        )

    async def limits(self) -> Limits:
        """The live limits (``user_config.limits``): the one owner the ingress reads."""
        return self._limits

    async def progress(self, request_id: str) -> float | None:
        """Fraction done of a running request, or None when unknown or finished."""
        return self._progress.get(request_id)

    async def describe(self) -> dict[str, Any]:
        """Identity and capabilities of the default model's engine (from its spec while this
        replica has not loaded it)."""
        default = self._pool.default
        loaded = self._pool.peek(default)
        if loaded is None:
            spec = self._pool.spec_of(default)
            facts = self._pool.table.supports(default)
            return {"engine": spec.engine, "model": default, "device": spec.device,
                    "dtype": None, "versions": {}, "loaded": False,
                    "supports": {**facts.model_dump(), "stereo": None, "sample_rate": None,
                                 "channels": None}}
        info = loaded.info
        sup = loaded.engine.supports
        return {
            "engine": info.engine, "model": loaded.name, "device": info.device,
            "dtype": info.dtype, "versions": dict(info.versions),
            "supports": {
                "melody": sup.melody, "continuation": sup.continuation, "stereo": sup.stereo,
                "max_duration_s": sup.max_duration_s, "sample_rate": sup.sample_rate,
                "channels": sup.channels,
            },
        }

    async def models(self) -> ReplicaModels:
        """The served models (the table: their one owner), and what this replica holds now."""
        return self._pool.report()

    async def stats(self) -> dict[str, Any]:
        """Load time, host (and GPU) memory, request count and recent batch sizes."""
        batcher: Any = self._generate_batch
        device_bytes = None
        if self._spec.device == "cuda":
            import torch

            device_bytes = int(torch.cuda.memory_allocated())
        return {
            "load_time_s": self._load_time_s,
            "loaded_models": self._pool.loaded(),
            "rss_bytes": _rss_bytes(),
            "device_allocated_bytes": device_bytes,
            "requests": self._requests,
            "pending_jobs": self._pending_jobs,
            "recent_batch_sizes": list(self._batches),
            "max_batch_size": batcher._get_max_batch_size(),
            "batch_wait_timeout_s": batcher._get_batch_wait_timeout_s(),
        }

    async def check_health(self) -> None:
        """A tiny op on the engine's device (Serve restarts the replica if this raises)."""
        if self._faults is not None:
            self._faults.check_health()
        for engine in self._pool.engines():
            await asyncio.to_thread(engine.check_health)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """The MusicGen application for ``args`` (see ``MusicGenAppArgs``).

    Raises ``NoGpuError`` at once when it would pin replicas to GPUs the cluster lacks,
    ``ConfigurationError`` for bad args.
    """
    a, table = parse_app_args(args)
    engines = {m.engine for m in table.models.values()} if table else {a.engine}
    device: Device = a.device
    if engines == {"synth"}:
        device = "cpu"
    elif device == "auto":
        device = "cuda" if gpu_check.cluster_gpus() >= 1 else "cpu"
    spec = parse_spec({"engine": a.engine, "model": a.model, "device": device,
                       "max_duration_s": a.max_long_form_s})
    num_gpus = 1 if device == "cuda" else 0
    if a.gpu_check:
        gpu_check.require_gpus(
            num_gpus, replicas=a.num_replicas,
            what=f"MusicGen ({', '.join(table.models) if table else a.model} on {device})")
    limits = Limits.model_validate({k: v for k, v in (("max_duration_s", a.max_duration_s),
                                                      ("max_prompt_chars", a.max_prompt_chars),
                                                      ("max_pending_jobs", a.max_pending_jobs))
                                    if v is not None})
    user_config = MusicGenUserConfig(
        max_batch_size=a.max_batch_size, batch_wait_timeout_s=a.batch_wait_timeout_s,
        limits=limits, fault_injection=a.fault_injection,
    )
    serving: dict[str, Any] = {k: v for k, v in (
        ("max_queued_requests", a.max_queued_requests),
        ("health_check_period_s", a.health_check_period_s)) if v is not None}
    deployment: Deployment = MusicGenDeployment  # type: ignore[assignment]
    app: Application = deployment.options(
        num_replicas=a.num_replicas,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": a.num_cpus},
        user_config=user_config.model_dump(),
        max_ongoing_requests=a.max_ongoing_requests or max(64, 2 * a.max_batch_size),
        **serving,
    ).bind(spec.model_dump(), None if table is None else table.model_dump())
    return app


def deploy(
    app: Application, *, name: str = "musicgen", route_prefix: str | None = None
) -> DeploymentHandle[Any]:
    """``serve.run`` after checking the app's GPU demand against the cluster (fails fast)."""
    gpu_check.check_app(app, what=f"application {name!r}")
    return serve.run(app, name=name, route_prefix=route_prefix)


__all__ = ["EngineSpec", "MusicGenAppArgs", "MusicGenDeployment", "MusicGenUserConfig",
           "build_app", "default_model_of", "deploy"]
