"""The generation pipeline: one job from a pending catalogue row to a stored, indexed track.

    generate (engine deployment) → normalise + analyse + encode (Ray tasks) → put audio →
    put sidecar (commit) → completed row

The steps shared by generation jobs (``jobs.generation``), object uploads (``jobs.uploads``)
and stored analyses. Nothing half-written stays visible (the sidecar is the commit marker, see
``storage.tracks``); transient storage errors are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engines.requests import GenerationRequest, GenerationResult
from functions.pipeline import ClipOptions
from functions.results import ProcessedClip
from functions.tasks import submit_clip
from musicfn import __version__, metrics
from musicfn.errors import MusicfnError, original_error
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.keys import new_id, utc_now
from storage.sidecar import AudioFacts, ErrorInfo, Inputs, Sidecar, Summary
from storage.tracks import TrackStore

log = logging.getLogger(__name__)
T = TypeVar("T")

_BIT_DEPTH = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "PCM_S8": 8, "PCM_U8": 8}
_STORAGE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


def pending_job(request: GenerationRequest, options: ClipOptions,
                inputs: Inputs | None = None) -> Sidecar:
    """The catalogue record of a new job (status pending, server-generated id); ``inputs``:
    its reference audio (provenance, kept in the finished sidecar)."""
    return Sidecar(
        inputs=inputs,
        id=new_id(), kind="generation", status="pending", created_at=utc_now(),
        prompt=request.prompt, seed=request.seed, model=request.model,
        request={"generation": request.model_dump(mode="json",
                                                   exclude={"melody", "continuation"}),
                 "output": options.model_dump(mode="json")},
        versions={"musicfn": __version__},
    )


def completed_sidecar(job: Sidecar, result: GenerationResult | None, clip: ProcessedClip,
                      audio_key: str, timings: dict[str, float]) -> Sidecar:
    """The sidecar of a finished track: audio facts, loudness, analysis, summary, timings.

    ``result`` is the engine's output for generations, None for uploads.
    """
    enc, analysis, after = clip.encoding, clip.analysis, clip.loudness.after
    tempo, key = analysis.tempo, analysis.key
    return job.model_copy(update={
        "status": "completed",
        "completed_at": utc_now(),
        "engine": result.engine if result else None,
        "model": result.model if result else None,
        "seed": result.seed if result else None,
        "audio_key": audio_key,
        "audio": AudioFacts(
            format=enc.format, subtype=enc.subtype, sample_rate=enc.sample_rate,
            channels=enc.channels, bit_depth=_BIT_DEPTH.get(enc.subtype), frames=enc.frames,
            duration_s=enc.duration_s, bytes=enc.bytes, sha256=enc.sha256),
        "summary": Summary(
            bpm=tempo.bpm if tempo else None,
            bpm_confidence=tempo.confidence if tempo else None,
            key=key.tonic if key else None, mode=key.mode if key else None,
            key_confidence=key.confidence if key else None,
            lufs=after.integrated_lufs, true_peak_dbtp=after.true_peak_dbtp,
            peak_dbfs=after.sample_peak_dbfs),
        "loudness": clip.loudness.model_dump(mode="json"),
        "analysis": analysis.model_dump(mode="json"),
        "timings": dict(timings),  # a copy: the record must not change after it is written
        "error": None,
    })


async def write_track(tracks: TrackStore, job: Sidecar, result: GenerationResult | None,
                      clip: ProcessedClip, prefix: str, options: ClipOptions,
                      timings: dict[str, float],
                      fence: Callable[[], None] | None = None) -> Sidecar:
    """Audio, then sidecar, into the bucket at the keys of ``job.id`` (transient errors
    retried). Returns the sidecar as stored; indexing it is the caller's step. ``fence`` is
    checked before each write (a job's lease, see ``jobs.runner.JobContext``); cancelling
    the caller waits for a write under way, so no writer outlives its job's task."""
    key = tracks.new_key(prefix, job.id, options.encoding.format)
    # The sidecar records the stages before it; its own upload and indexing cannot be in it
    # (the catalogue row must equal the stored sidecar, for reindex).
    sidecar = completed_sidecar(job, result, clip, key.audio_key, timings)
    started = time.perf_counter()
    stored = await _retry_transient(
        lambda: run_to_end(lambda: tracks.write(sidecar, clip.audio, fence)))
    metrics.record_stage("upload", time.perf_counter() - started)
    return stored


async def store_track(tracks: TrackStore, catalogue: CatalogueClient, job: Sidecar,
                      result: GenerationResult | None, clip: ProcessedClip, prefix: str,
                      options: ClipOptions, timings: dict[str, float]) -> Sidecar:
    """``write_track``, then the completed row through the catalogue owner ``catalogue``."""
    stored = await write_track(tracks, job, result, clip, prefix, options, timings)
    started = time.perf_counter()
    await catalogue.complete(stored)
    metrics.record_stage("index", time.perf_counter() - started)
    return stored


def failed_sidecar(job: Sidecar, stage: str, exc: BaseException) -> Sidecar:
    """``job`` as failed in ``stage``: the code and message of a musicfn error, or a generic
    ``internal_error`` (logged with its traceback) for anything else."""
    original = original_error(exc)
    if isinstance(original, MusicfnError):
        error = ErrorInfo(code=original.code, message=original.message, stage=stage)
    else:
        log.exception("job %s failed in %s", job.id, stage, exc_info=original)
        error = ErrorInfo(code="internal_error", stage=stage,
                          message=f"{type(original).__name__} during {stage}")
    return job.model_copy(update={"status": "failed", "error": error})


async def postprocess_clip(audio: Any, sample_rate: int, options: ClipOptions,
                       timings: dict[str, float]) -> ProcessedClip:
    """Normalise, analyse and encode as Ray tasks; record wall and per-stage seconds (in
    ``timings`` and as metrics)."""
    clip: ProcessedClip = await _timed(timings, "postprocess",
                                       submit_clip(audio, sample_rate, options))
    timings.update(normalize=clip.timings.normalize_s, analyze=clip.timings.analyze_s,
                   encode=clip.timings.encode_s)
    for stage in ("normalize", "analyze", "encode"):
        metrics.record_stage(stage, timings[stage])
    return clip


async def _timed(timings: dict[str, float], name: str, awaitable: Awaitable[T]) -> T:
    started = time.perf_counter()
    value = await awaitable
    timings[name] = time.perf_counter() - started
    if name == "generate":
        metrics.record_stage(name, timings[name])
    return value


async def run_to_end(call: Callable[[], T]) -> T:
    """``call()`` in a thread, awaited to its end even when the caller is cancelled (then
    re-raising the cancellation): cancelling a task does not stop its thread, and a store
    step left running would write after its job was handed to another runner."""
    future = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise


async def _retry_transient(call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``, retrying retryable storage errors with backoff (≈7.5 s in all)."""
    for delay in _STORAGE_RETRY_DELAYS_S:
        try:
            return await call()
        except MusicfnError as exc:
            if not exc.retryable:
                raise
            log.warning("transient storage error, retrying in %.1f s: %s", delay, exc.message)
            await asyncio.sleep(delay)
    return await call()


async def store_upload(tracks: TrackStore, catalogue: CatalogueClient, settings: Settings,
                       audio: Any, sample_rate: int, options: ClipOptions, *,
                       filename: str) -> Sidecar:
    """Normalise, analyse and encode uploaded audio and store it as a track (kind ``upload``,
    under the processed prefix) for a caller that waits (``/v1/analyses?store=true``).

    No row is written before the sidecar is stored, so a caller hanging up leaves at most an
    orphan object (reported by ``musicfn verify``), never a row stuck ``pending``. Raises on
    failure."""
    job = Sidecar(id=new_id(), kind="upload", status="pending", created_at=utc_now(),
                  request={"filename": filename, "output": options.model_dump(mode="json")},
                  versions={"musicfn": __version__})
    timings: dict[str, float] = {}
    clip = await postprocess_clip(audio, sample_rate, options, timings)
    return await store_track(tracks, catalogue, job, None, clip, settings.processed_prefix,
                             options, timings)
