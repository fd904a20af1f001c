"""``/v1/generations``: submit, read, stream, cancel and delete generation jobs; the catalogue.

Submitting writes the job and its ``pending`` track row in one catalogue transaction and
answers 202: the work runs in a job runner, never in this request, so a client hanging up at
any point leaves either nothing or a job that will run.

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from deployments.api.deps import Services, ServicesDep
from deployments.api.generation_inputs import (
    GENERATION_REQUEST_BODY,
    discard_upload,
    read_generation_body,
    resolve_inputs,
)
from deployments.api_models import GenerationRecord
from jobs.callbacks import validate_callback_url
from jobs.model import GenerationPayload
from jobs.pipeline import pending_job
from musicfn.errors import ConflictError, InvalidRequestError, NotFoundError
from musicfn.logs import bind_job_id, current_request_id
from musicfn.validation import validation_message
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.jobs_schema import JobView
from storage.sidecar import FINAL_STATUSES, Mode, TrackKind, TrackStatus

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/generations", tags=["generations"])
KEEPALIVE_S = 15.0
# 1-255 printable ASCII characters, no blank at either end.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_QUERY_NAMES = {"prompt_contains": "prompt"}


# The waveform peaks (thousands of numbers) leave records unless asked for: they have their
# own route, and most reads are clients polling a status.
NO_WAVEFORM: dict[str, Any] = {"record": {"analysis": {"waveform"}}}


async def record(services: Services, view: JobView) -> GenerationRecord:
    """The API record of a track: its job's live state and, once done, an audio URL."""
    sc = view.track
    url = services.objects.presign_get(sc.audio_key) \
        if sc.status == "completed" and sc.audio_key else None
    return GenerationRecord.of(view, audio_url=url)


async def respond(services: Services, track_id: str, wait: float) -> Response:
    """The record (without waveform peaks), after waiting up to ``wait`` s for a final status
    (200 when final within the wait, else 202 with Location)."""
    view = await services.view(track_id)
    if wait > 0 and view.track.status not in FINAL_STATUSES:
        job = view.job
        await services.watcher.until_final(track_id, (view.track.status,
                                                      job.progress if job else None), wait)
        view = await services.view(track_id)
    rec = await record(services, view)
    final = rec.status in FINAL_STATUSES
    return Response(rec.model_dump_json(exclude=NO_WAVEFORM), media_type="application/json",
                    status_code=200 if final and wait > 0 else 202,
                    headers={"Location": f"/v1/generations/{track_id}"})


@router.post("", status_code=202, response_model=GenerationRecord,
             responses={200: {"model": GenerationRecord,
                              "description": "the job ended within ?wait="},
                        404: {"description": "melody/continuation.track_id names no track"},
                        409: {"description": "the Idempotency-Key was used with another body, "
                                             "or its job has been deleted; or the referenced "
                                             "track has no audio yet"}},
             openapi_extra={"requestBody": GENERATION_REQUEST_BODY})
async def create_generation(
        request: Request, services: ServicesDep,
        wait: Annotated[float, Query(ge=0, le=120, allow_inf_nan=False)] = 0,
        idempotency_key: Annotated[str | None, Header(
            min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN,
            description="1-255 printable ASCII characters, no blank at either end")] = None,
) -> Response:
    """Accept a generation job: 202 + Location at once, or 200 with the record when it ends
    within ``?wait=`` seconds. Everything that can be known now is checked now (values, live
    limits, the served engine and what it supports, reference audio, the object store: 503 +
    Retry-After while it is down). The body is JSON, or multipart/form-data with the JSON as
    the part ``request`` and a ``melody`` or ``continuation`` audio file (up to
    MUSICFN_MAX_UPLOAD_BYTES; stored under ``inputs/``, the job carries only its key). The
    same Idempotency-Key with the same body returns the same job (409
    ``idempotency_key_reused`` with another body, 409 ``idempotency_key_spent`` once that job
    was deleted); 503 ``queue_full`` + Retry-After when the queue (all replicas) is full."""
    body, upload = await read_generation_body(request, services.settings.max_upload_bytes)
    limits = await services.limits.get()
    gen = body.generation_request(limits, await services.models.get())
    if body.callback_url is not None:
        validate_callback_url(body.callback_url,
                              allow_private=services.settings.callback_allow_private)
    options = body.clip_options()
    await services.storage.require()
    inputs = await resolve_inputs(services, body, upload, gen.duration_s,
                                 gen.model or services.default_model)
    track = pending_job(gen, options, inputs)
    payload = GenerationPayload(request=gen, options=options, callback_url=body.callback_url,
                                webhook_events_filter=body.webhook_events_filter,
                                request_id=current_request_id(), inputs=inputs)
    fingerprint = body.fingerprint(upload.sha256 if upload is not None else None)
    idempotency = None if idempotency_key is None else (idempotency_key, fingerprint)
    try:
        accepted = await services.queue.submit_generation(
            track, payload, max_depth=limits.max_pending_jobs, idempotency=idempotency)
    except BaseException:
        await discard_upload(services, inputs)
        raise
    if not accepted.created:  # an Idempotency-Key replay: the first job's state
        await discard_upload(services, inputs)
        try:
            return await respond(services, accepted.job_id, wait)
        except NotFoundError:
            raise ConflictError(
                f"Idempotency-Key {idempotency_key!r} made generation {accepted.job_id}, which "
                "has been deleted; use a new key to generate again",
                code="idempotency_key_spent") from None
    bind_job_id(track.id)
    log.info("job accepted: %.1f s, model %s%s", gen.duration_s, gen.model or "default",
             "".join(f", {kind} {ref.key}" for kind, ref in
                     (inputs.refs().items() if inputs else ())))
    services.nudge_runners()
    if wait > 0:
        return await respond(services, track.id, wait)
    # Just accepted: the record is the pending track we wrote (no second catalogue call).
    rec = GenerationRecord.of(JobView(track=track))
    return JSONResponse(rec.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/generations/{track.id}"})


@router.get("", response_model=TrackPage)
async def list_generations(
        services: ServicesDep, status: TrackStatus | None = None,
        kind: TrackKind | None = None,
        prompt: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
        key: Annotated[str | None, Query(pattern=r"^[A-G][#b]?$")] = None,
        mode: Mode | None = None,
        engine: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        bpm_min: Annotated[float | None, Query(ge=0, le=1000, allow_inf_nan=False)] = None,
        bpm_max: Annotated[float | None, Query(ge=0, le=1000, allow_inf_nan=False)] = None,
        lufs_min: Annotated[float | None, Query(ge=-200, le=20, allow_inf_nan=False)] = None,
        lufs_max: Annotated[float | None, Query(ge=-200, le=20, allow_inf_nan=False)] = None,
        created_from: Annotated[str | None, Query(
            json_schema_extra={"format": "date-time"},
            description="RFC 3339 with a timezone, inclusive")] = None,
        created_to: Annotated[str | None, Query(
            json_schema_extra={"format": "date-time"},
            description="RFC 3339 with a timezone, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(
            min_length=1, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """The catalogue, newest first, filtered; follow ``next_cursor`` for more. A bad filter
    is a 400 naming it; a range whose min is over its max is one too."""
    try:
        query = TrackQuery.model_validate({
            "status": status, "kind": kind, "prompt_contains": prompt, "key": key,
            "mode": mode, "engine": engine, "bpm_min": bpm_min, "bpm_max": bpm_max,
            "lufs_min": lufs_min, "lufs_max": lufs_max,
            "created_from": parse_instant("created_from", created_from),
            "created_to": parse_instant("created_to", created_to), "limit": limit,
            "cursor": cursor})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _QUERY_NAMES.get(str(first["loc"][0]), str(first["loc"][0])) \
            if first["loc"] else "filters"
        message = validation_message(exc)
        for field, query_name in _QUERY_NAMES.items():
            message = message.replace(field, query_name)
        raise InvalidRequestError(message, code=f"invalid_{name}") from None
    page = await services.catalogue.list_tracks(query)
    return page.model_dump(mode="json")  # type: ignore[no-any-return]


def parse_instant(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time with a timezone, in UTC, else 400 (a leap second counts as :59;
    an instant past the ends of the calendar in UTC is that end)."""
    if value is None:
        return None
    if not _RFC3339.match(value):
        raise InvalidRequestError(f"{name}: {value[:40]!r} is not an RFC 3339 date-time with a "
                                  "timezone (e.g. 2026-11-22T00:00:00Z)", code=f"invalid_{name}")
    text = value.upper().replace(" ", "T")
    if text[17:19] == "60":
        text = f"{text[:17]}59{text[19:]}"
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequestError(f"{name}: {exc}", code=f"invalid_{name}") from None
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        end = datetime.min if instant.year == datetime.min.year else datetime.max
        return end.replace(tzinfo=UTC)


@router.get("/{track_id}", response_model=GenerationRecord)
async def get_generation(
    track_id: str, services: ServicesDep,
    include: Annotated[Literal["waveform"] | None, Query(
        description="`waveform`: also the peaks in record.analysis (else only at /waveform)")]
    = None,
) -> Response:
    """Status, progress, the full record and a short-lived audio URL. A final record is
    served from this replica's read-through cache for a few seconds (it never changes)."""
    waveform = include == "waveform"
    body = services.finals.get(track_id, waveform=waveform)
    if body is None:
        rec = await record(services, await services.view(track_id))
        body = rec.model_dump_json(exclude=None if waveform else NO_WAVEFORM).encode()
        if rec.status in FINAL_STATUSES:
            services.finals.put(track_id, body, waveform=waveform)
    return Response(body, media_type="application/json")


_STATUS_EVENT = {  # one Server-Sent Event of the stream
    "type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": "status"}, "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "type": "object", "required": ["id", "status", "progress"], "properties": {
                "id": {"type": "string"}, "status": {"type": "string"},
                "progress": {"type": ["number", "null"]}}}}}}


@router.get("/{track_id}/events", response_class=StreamingResponse,
            responses={200: {"description": "the status stream, one event per change",
                             "content": {"text/event-stream": {"schema": _STATUS_EVENT}}}})
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
             responses={202: {"model": GenerationRecord,
                              "description": "running: stops once its runner sees it"},
                        409: {"description": "the job already ended, or it is an upload"}})
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
            responses={200: {"description": "the audio (with ?inline=true)", "content": {
                           "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                           "audio/flac": {"schema": {"type": "string", "format": "binary"}}}},
                       307: {"description": "redirect to a presigned URL (10 min)",
                             "headers": {"Location": {"schema": {"type": "string"}}}},
                       409: {"description": "the track has no audio (yet): not completed"}})
async def get_audio(track_id: str, services: ServicesDep, inline: bool = False) -> Response:
    """Redirect to a presigned GET of the audio, or stream it with ``?inline=1``; 409 until
    the track is completed."""
    sc = (await services.view(track_id)).track
    if sc.status != "completed" or sc.audio_key is None or sc.audio is None:
        raise ConflictError(f"generation {track_id} has no audio: it is {sc.status}",
                            code="no_audio")
    if inline:
        data = await asyncio.to_thread(services.objects.get, sc.audio_key)
        media = "audio/flac" if sc.audio.format == "flac" else "audio/wav"
        return Response(data, media_type=media)
    return RedirectResponse(services.objects.presign_get(sc.audio_key), status_code=307)


@router.get("/{track_id}/waveform", response_model=dict[str, Any],
            responses={409: {"description": "the track has no analysis (yet): not completed"}})
async def get_waveform(track_id: str, services: ServicesDep) -> dict[str, Any]:
    """Peaks in BBC audiowaveform's JSON format; 409 until the track is completed."""
    sc = (await services.view(track_id)).track
    if sc.analysis is None:
        raise ConflictError(f"generation {track_id} has no analysis: it is {sc.status}",
                            code="no_waveform")
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
    services.finals.forget(track_id)
    await services.catalogue.delete([track_id])
    services.finals.forget(track_id)
    return Response(status_code=204)
