"""Generation jobs: from a leased job to a stored track and its final catalogue row.

    engine (MusicGen deployment, batched) → normalise + analyse + encode (Ray tasks) →
    audio + sidecar at the keys of the job's id → the runner's ``finish`` writes the row

Re-driving a job after its runner died repeats these steps with the same id, so the same keys:
one audio object, one sidecar and one row, whatever ran before. Bad requests and engine errors
end the job ``failed`` with the stage, a code and a message; faults of the machinery itself
(catalogue unreachable) raise, and the runner tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from engines.requests import GenerationRequest, GenerationResult
from jobs.callbacks import WebhookEvent, deliver, wants
from jobs.inputs import load_inputs
from jobs.job_context import JobContext, JobEnd
from jobs.model import GenerationPayload
from jobs.pipeline import failed_sidecar, postprocess_clip, write_track
from musicfn import metrics
from musicfn.errors import CatalogueError, LeaseLostError
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.dlq import DeadLetter, DeadLetterQueue
from storage.jobs_schema import JobOutcome, JobRecord
from storage.sidecar import ErrorInfo, Sidecar
from storage.tracks import TrackStore

log = logging.getLogger(__name__)

# Progress at the start of each stage; during "generate" the engine's own fraction moves it
# from 0.05 towards 0.8 (polled every PROGRESS_POLL_S).
_PROGRESS = {"generate": 0.05, "postprocess": 0.8, "upload": 0.95}
PROGRESS_POLL_S = 0.5


class GenerationWork:
    """Runs generation jobs against an engine client, the bucket and the catalogue owner."""

    def __init__(self, engine: Any, catalogue: CatalogueClient, tracks: TrackStore,
                 settings: Settings) -> None:
        self.engine = engine  # jobs.engine_client.EngineClient over the MusicGen handle
        self.catalogue = catalogue
        self.tracks = tracks
        self.dlq = DeadLetterQueue(tracks.objects, settings)
        self.settings = settings

    async def run(self, job: JobRecord, ctx: JobContext) -> JobEnd:
        """Generate, post-process and store; the end carries the track's final record."""
        payload = GenerationPayload.model_validate(job.payload)
        track = await self._track(job.id)
        if job.attempts == 1:
            await self._notify(payload, track.model_copy(
                update={"status": "processing"}))
        timings: dict[str, float] = {}
        stage = "generate"
        try:
            ctx.progress = _PROGRESS[stage]
            request = payload.request.model_copy(update={"request_id": job.id})
            if payload.inputs is not None:  # reference audio: by key in the payload
                stage = "inputs"
                audio = await asyncio.to_thread(load_inputs, self.tracks.objects,
                                                payload.inputs)
                request = request.model_copy(update=audio)
                stage = "generate"
            result = await _timed(timings, "generate",
                                  self._generate_with_progress(request, job.id, ctx))
            stage = "postprocess"
            ctx.progress = _PROGRESS[stage]
            clip = await postprocess_clip(result.audio, result.sample_rate, payload.options,
                                          timings)
            stage = "upload"
            ctx.progress = _PROGRESS[stage]
            ctx.storing = True
            try:
                await ctx.ensure_lease()
                stored = await write_track(self.tracks, track, result, clip,
                                           self.settings.generations_prefix, payload.options,
                                           timings, fence=ctx.check_lease)
            finally:
                ctx.storing = False
        except asyncio.CancelledError:
            raise
        except (CatalogueError, LeaseLostError):
            raise  # the machinery, not the job: another attempt later, maybe elsewhere
        except Exception as exc:  # the job's own failure: recorded on its row
            failed = failed_sidecar(track, stage, exc)
            return JobEnd("failed", error=failed.error, track=failed)
        return JobEnd("completed", track=stored)

    async def _generate_with_progress(self, request: GenerationRequest, job_id: str,
                                      ctx: JobContext) -> GenerationResult:
        """The engine call; meanwhile the engine's own fraction (window by window in long
        form) is polled and mapped into the generate stage's share of the job's progress,
        which the runner's heartbeat carries to the catalogue (and the SSE stream)."""
        call = asyncio.ensure_future(self.engine.generate.remote(request))
        low, high = _PROGRESS["generate"], _PROGRESS["postprocess"]
        try:
            while not call.done():
                await asyncio.wait([call], timeout=PROGRESS_POLL_S)
                if call.done():
                    break
                fraction = await self._engine_progress(job_id)
                if fraction is not None:
                    ctx.progress = max(ctx.progress or low, low + (high - low) * fraction)
        finally:
            if not call.done():  # the job was canceled (or lost its lease): stop the call
                call.cancel()
        result: GenerationResult = call.result()
        return result

    async def _engine_progress(self, job_id: str) -> float | None:
        """The engine's fraction done of ``job_id`` (None: unknown, e.g. another replica)."""
        try:
            value = await asyncio.wait_for(self.engine.handle.progress.remote(job_id),
                                           PROGRESS_POLL_S)
        except Exception:  # progress is best effort; the generation call decides the job
            return None
        return None if value is None else min(1.0, max(0.0, float(value)))

    async def discard(self, job: JobRecord) -> None:
        """Delete what a canceled job stored (its keys follow from its id)."""
        payload = GenerationPayload.model_validate(job.payload)
        key = self.tracks.new_key(self.settings.generations_prefix, job.id,
                                  payload.options.encoding.format)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.tracks.delete, key)

    async def exhausted(self, job: JobRecord) -> JobEnd:
        """Out of attempts (its runners kept dying): a dead letter, then ``interrupted``."""
        error = ErrorInfo(code="interrupted", stage="run",
                          message=f"the job was interrupted {job.attempts - 1} times "
                                  f"(runner lost); giving up")
        letter = DeadLetter.new(bucket=self.settings.bucket, key="", etag="", version_id="",
                                source="jobs", error=error, attempts=job.attempts - 1,
                                job_kind="generation", job_id=job.id)
        await asyncio.to_thread(self.dlq.put, letter)
        return JobEnd("failed", error=error)

    async def ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        """The ``completed`` callback (for every terminal state), when asked for."""
        payload = GenerationPayload.model_validate(job.payload)
        if payload.callback_url is None:
            return
        await self._notify(payload, await self._track(job.id))

    async def _track(self, track_id: str) -> Sidecar:
        track: Sidecar | None = await self.catalogue.get(track_id)
        if track is None:
            raise CatalogueError(f"job {track_id} has no track row")
        return track

    async def _notify(self, payload: GenerationPayload, track: Sidecar) -> None:
        """Deliver one signed callback if the job asked for it; record how it went."""
        if payload.callback_url is None:
            return
        event = WebhookEvent.from_record({"id": track.id, "status": track.status,
                                          "record": track.model_dump(mode="json")})
        if not wants(payload.webhook_events_filter, event.type):
            return
        secret = self.settings.webhook_secret
        delivery = await deliver(payload.callback_url, event,
                                 secret=secret.get_secret_value() if secret else None,
                                 allow_private=self.settings.callback_allow_private,
                                 timeout_s=self.settings.callback_timeout_s,
                                 attempts=self.settings.callback_attempts)
        await self.catalogue.record_delivery(track.id, delivery.model_dump(mode="json"))


async def _timed(timings: dict[str, float], name: str, awaitable: Any) -> Any:
    started = time.perf_counter()
    value = await awaitable
    timings[name] = time.perf_counter() - started
    metrics.record_stage(name, timings[name])
    return value
