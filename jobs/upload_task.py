"""Small uploads processed in Ray tasks: one object per call, several calls per task.

A small upload (up to ``SMALL_OBJECT_BYTES``) goes from object to stored track in one process
(``process_upload``: download, decode, the chain, audio then sidecar). A burst of them costs a
Ray task each, and a task's own overhead (submission, scheduling, arguments and result across
processes) was as large as the audio work of a 0.5 s clip. ``UploadBatcher`` sends concurrent
uploads of one runner together, ``UPLOAD_BATCH`` per task and ``UPLOAD_TASKS_IN_FLIGHT`` tasks
at once: the first goes out at once, later ones join the next task while those run. Each
upload's outcome is its own: a bad file fails only itself (its error is returned, then raised
to its caller, who retries or dead-letters it as before); a worker dying re-runs the task,
and re-processing an upload writes the same keys (the track id is the job's).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from functions.decode import DecodeLimits, decode_audio
from functions.pipeline import ClipOptions, process_clip
from jobs.job_context import deadline_fence
from jobs.pipeline import write_track
from musicfn import metrics
from musicfn.logs import configure_json_logging_in_worker, job_context
from musicfn.settings import Settings
from storage.objects import ObjectStore
from storage.owner_batch import Coalescer
from storage.parallel import run_task
from storage.sidecar import Sidecar
from storage.tracks import TrackStore

SMALL_OBJECT_BYTES = 8 * 1024 * 1024  # up to ~60 s of 32 kHz stereo 16-bit WAV
UPLOAD_TASK_CPUS = 0.5  # about half of such a task's time is S3 I/O
UPLOAD_BATCH = 8  # small uploads per Ray task at most
UPLOAD_TASKS_IN_FLIGHT = 2  # batch tasks per runner at once (one per core of a small box)
_STORES: dict[tuple[Any, ...], ObjectStore] = {}  # per worker process, by endpoint + bucket
Upload = tuple[str, Sidecar, float | None]  # object key, pending sidecar, write deadline
_LOOPS = threading.local()


def process_upload(settings: Settings, key: str, job: Sidecar, options: ClipOptions,
                   deadline: float | None = None) -> Sidecar:
    """A small upload from object to stored track in one process (a Ray task): download,
    decode, the chain, audio then sidecar (transient storage errors retried). Returns the
    stored sidecar; indexing it is the caller's. No write starts after ``deadline`` (the
    job's fence, ``JobContext.write_deadline``): ``LeaseLostError`` instead."""
    configure_json_logging_in_worker()
    ident = (settings.endpoint_url, settings.bucket, settings.access_key, settings.secret_key,
             settings.s3_region, settings.s3_connect_timeout_s, settings.s3_read_timeout_s,
             settings.s3_max_attempts)
    objects = _STORES.get(ident) or _STORES.setdefault(ident, ObjectStore(settings))
    with job_context(job.id):
        timings: dict[str, float] = {}
        started = time.perf_counter()
        data = objects.get(key)
        timings["download"] = time.perf_counter() - started
        decoded = decode_audio(data, DecodeLimits.from_settings(settings))
        started = time.perf_counter()
        clip = process_clip(decoded.audio, decoded.sample_rate, options)
        timings["postprocess"] = time.perf_counter() - started
        timings.update(normalize=clip.timings.normalize_s, analyze=clip.timings.analyze_s,
                       encode=clip.timings.encode_s)
        for stage in ("normalize", "analyze", "encode"):
            metrics.record_stage(stage, timings[stage])
        return _thread_loop().run_until_complete(write_track(
            TrackStore(objects, settings), job, None, clip, settings.processed_prefix, options,
            timings, fence=deadline_fence(deadline)))


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, kept between uploads: ``asyncio.run`` per upload made a new
    loop and a new default executor (a thread started and joined) each time."""
    loop: asyncio.AbstractEventLoop | None = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop


def process_uploads(settings: Settings, items: list[Upload],
                    options: ClipOptions) -> list[Sidecar | Exception]:
    """``process_upload`` for each (key, pending sidecar, deadline), in one process: each
    one's stored sidecar, or the error that stopped it (the others go on)."""
    out: list[Sidecar | Exception] = []
    for key, job, deadline in items:
        try:
            out.append(process_upload(settings, key, job, options, deadline))
        except Exception as exc:  # its own outcome; the caller raises it for that upload
            out.append(exc)
    return out


class UploadBatcher:
    """``await store(key, job)`` from many events → a few ``process_uploads`` tasks."""

    def __init__(self, settings: Settings, options: ClipOptions) -> None:
        self.settings = settings
        self.options = options
        self._batches: Coalescer[Upload, Sidecar | Exception] = Coalescer(
            self._many, max_batch=UPLOAD_BATCH, max_inflight=UPLOAD_TASKS_IN_FLIGHT)

    async def store(self, key: str, job: Sidecar, deadline: float | None = None) -> Sidecar:
        """The upload at ``key`` stored as ``job``'s track, no write starting after
        ``deadline``; raises what stopped it."""
        result = await self._batches.one((key, job, deadline))
        if isinstance(result, Exception):
            raise result
        return result

    async def _many(self, items: list[Upload]) -> list[Sidecar | Exception]:
        if len(items) == 1:  # no batch to share: the plain task
            key, job, deadline = items[0]
            one: Sidecar = await run_task(process_upload, self.settings, key, job,
                                          self.options, deadline, num_cpus=UPLOAD_TASK_CPUS)
            return [one]
        done: list[Sidecar | Exception] = await run_task(
            process_uploads, self.settings, items, self.options, num_cpus=UPLOAD_TASK_CPUS)
        return done
