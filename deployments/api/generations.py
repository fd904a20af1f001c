"""``/v1/generations``: submit, read, stream, cancel and delete generation jobs; the catalogue.

Submitting writes the job and its ``pending`` track row in one catalogue transaction and
answers 202: the work runs in a job runner, never in this request, so a client hanging up at
any point leaves either nothing or a job that will run.

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from deployments.api.deps import Services, ServicesDep
from deployments.api_models import GenerationBody, GenerationRecord
from jobs.callbacks import validate_callback_url
from jobs.model import GenerationPayload
from jobs.pipeline import pending_job
from musicfn.errors import ConflictError, InvalidRequestError, NotFoundError
from musicfn.logs import bind_job_id, current_request_id
from storage.catalogue_queries import TrackQuery
from storage.jobs_schema import JobView
from storage.sidecar import FINAL_STATUSES

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/generations", tags=["generations"])
KEEPALIVE_S = 15.0


async def record(services: Services, view: JobView) -> GenerationRecord:
    """The API record of a track: its job's live state and, once done, an audio URL."""
    sc = view.track
    url = services.objects.presign_get(sc.audio_key) \
        if sc.status == "completed" and sc.audio_key else None
    return GenerationRecord.of(view, audio_url=url)


async def respond(services: Services, track_id: str, wait: float) -> JSONResponse:
    """The record, after waiting up to ``wait`` s for a final status (200 when final within
    the wait, else 202 with Location)."""
    view = await services.view(track_id)
    if wait > 0 and view.track.status not in FINAL_STATUSES:
        job = view.job
        await services.watcher.until_final(track_id, (view.track.status,
                                                      job.progress if job else None), wait)
        view = await services.view(track_id)
    rec = await record(services, view)
    final = rec.status in FINAL_STATUSES
    return JSONResponse(rec.model_dump(mode="json"),
                        status_code=200 if final and wait > 0 else 202,
                        headers={"Location": f"/v1/generations/{track_id}"})


@router.post("", status_code=202, response_model=GenerationRecord)
async def create_generation(
        body: GenerationBody, services: ServicesDep,
        wait: Annotated[float, Query(ge=0, le=120)] = 0,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """Accept a generation job: 202 + Location at once, or 200 with the record when it ends
    within ``?wait=`` seconds. The same Idempotency-Key with the same body returns the same
    job; 503 ``queue_full`` + Retry-After when the queue (all replicas) is full."""
    limits = await services.limits.get()
    gen = body.generation_request(limits, services.default_model)
    if body.callback_url is not None:
        validate_callback_url(body.callback_url,
                              allow_private=services.settings.callback_allow_private)
    options = body.clip_options()
    track = pending_job(gen, options)
    payload = GenerationPayload(request=gen, options=options, callback_url=body.callback_url,
                                webhook_events_filter=body.webhook_events_filter,
                                request_id=current_request_id())
    idempotency = None if idempotency_key is None else (idempotency_key, body.fingerprint())
    accepted = await services.queue.submit_generation(
        track, payload, max_depth=limits.max_pending_jobs, idempotency=idempotency)
    if not accepted.created:  # an Idempotency-Key replay: the first job's state
        return await respond(services, accepted.job_id, wait)
    bind_job_id(track.id)
    log.info("job accepted: %.1f s, model %s", gen.duration_s, gen.model or "default")
    services.nudge_runners()
    if wait > 0:
        return await respond(services, track.id, wait)
    # Just accepted: the record is the pending track we wrote (no second catalogue call).
    rec = GenerationRecord.of(JobView(track=track))
    return JSONResponse(rec.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/generations/{track.id}"})


@router.get("", response_model=dict[str, Any])
async def list_generations(
        services: ServicesDep, status: str | None = None, kind: str | None = None,
        prompt: str | None = None, key: str | None = None, mode: str | None = None,
        engine: str | None = None, bpm_min: float | None = None,
        bpm_max: float | None = None, lufs_min: float | None = None,
        lufs_max: float | None = None, created_from: str | None = None,
        created_to: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None) -> dict[str, Any]:
    """The catalogue, newest first, filtered; follow ``next_cursor`` for more."""
    try:
        query = TrackQuery.model_validate({
            "status": status, "kind": kind, "prompt_contains": prompt, "key": key,
            "mode": mode, "engine": engine, "bpm_min": bpm_min, "bpm_max": bpm_max,
            "lufs_min": lufs_min, "lufs_max": lufs_max, "created_from": created_from,
            "created_to": created_to, "limit": limit, "cursor": cursor})
    except ValueError as exc:
        raise InvalidRequestError(str(exc).splitlines()[-1].strip()) from None
    page = await services.catalogue.list_tracks.remote(query)
    return page.model_dump(mode="json")  # type: ignore[no-any-return]


@router.get("/{track_id}", response_model=GenerationRecord)
async def get_generation(track_id: str, services: ServicesDep) -> GenerationRecord:
    """Status, progress, the full record and a short-lived audio URL."""
    return await record(services, await services.view(track_id))


@router.get("/{track_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(track_id: str, services: ServicesDep) -> StreamingResponse:
    """Server-Sent Events: ``event: status`` with ``{"id", "status", "progress"}`` now and on
    every change, until a final status (completed, failed, canceled); then the stream ends."""
    view = await services.view(track_id)
    first = (view.track.status, view.job.progress if view.job else None)
    return StreamingResponse(_sse(services, track_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(services: Services, track_id: str,
               first: tuple[str, float | None]) -> AsyncIterator[str]:
    changes = services.watcher.changes(track_id, first).__aiter__()
    seq = 0
    while True:
        try:
            status, progress = await asyncio.wait_for(changes.__anext__(), KEEPALIVE_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        except StopAsyncIteration:
            return
        seq += 1
        data = json.dumps({"id": track_id, "status": status, "progress": progress})
        yield f"id: {seq}\nevent: status\ndata: {data}\n\n"


@router.post("/{track_id}/cancel", response_model=GenerationRecord,
             responses={409: {"description": "the job already ended"}})
async def cancel_generation(track_id: str, services: ServicesDep) -> JSONResponse:
    """Cancel a job: a pending one never runs (200, ``canceled``); a running one stops and
    stores nothing (202 until its runner confirms). 409 once it has ended."""
    view = await services.view(track_id)
    if view.job is None:
        raise ConflictError(f"{track_id} is not a job that can be canceled", code="not_a_job")
    job = await services.queue.cancel(track_id)
    view = await services.view(track_id)
    rec = await record(services, view)
    return JSONResponse(rec.model_dump(mode="json"),
                        status_code=200 if job.state == "done" else 202)


@router.get("/{track_id}/audio", response_class=Response,
            responses={200: {"content": {"audio/wav": {}, "audio/flac": {}}},
                       307: {"description": "redirect to a presigned URL"}})
async def get_audio(track_id: str, services: ServicesDep, inline: bool = False) -> Response:
    """Redirect to a presigned GET of the audio, or stream it with ``?inline=1``."""
    sc = (await services.view(track_id)).track
    if sc.status != "completed" or sc.audio_key is None or sc.audio is None:
        raise NotFoundError(f"generation {track_id} has no audio (status {sc.status})")
    if inline:
        data = await asyncio.to_thread(services.objects.get, sc.audio_key)
        media = "audio/flac" if sc.audio.format == "flac" else "audio/wav"
        return Response(data, media_type=media)
    return RedirectResponse(services.objects.presign_get(sc.audio_key), status_code=307)


@router.get("/{track_id}/waveform", response_model=dict[str, Any])
async def get_waveform(track_id: str, services: ServicesDep) -> dict[str, Any]:
    """Peaks in BBC audiowaveform's JSON format."""
    sc = (await services.view(track_id)).track
    if sc.analysis is None:
        raise NotFoundError(f"generation {track_id} has no analysis (status {sc.status})")
    waveform: dict[str, Any] = sc.analysis["waveform"]
    return waveform


@router.delete("/{track_id}", status_code=204, response_class=Response,
               responses={409: {"description": "the job has not ended"}})
async def delete_generation(track_id: str, services: ServicesDep) -> Response:
    """Remove the track (sidecar, then audio) and its row. 409 while its job runs."""
    sc = (await services.view(track_id)).track
    if sc.status not in FINAL_STATUSES:
        raise ConflictError(f"generation {track_id} is still {sc.status}: cancel it first "
                            f"(POST /v1/generations/{track_id}/cancel)", code="job_in_progress")
    if sc.audio_key is not None:
        await asyncio.to_thread(services.tracks.delete, services.tracks.key_for(sc))
    await services.catalogue.delete.remote([track_id])
    return Response(status_code=204)
