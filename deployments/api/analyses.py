"""``/v1/analyses``: analyse an uploaded file now, and optionally store it as a track.

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments.api.deps import ServicesDep
from deployments.api.generations import record
from deployments.api.uploads import read_upload
from functions.decode import DecodeLimits, decode_audio
from functions.options import DEFAULT_PRESET, ClipOptions, PresetName
from functions.tasks import analyze_task
from jobs.pipeline import store_upload
from storage.jobs_schema import JobView

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])


_AUDIO = {"schema": {"type": "string", "format": "binary"}}
AUDIO_MEDIA_TYPES = ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg",
                     "application/octet-stream")


@router.post("", response_model=dict[str, Any], responses={
    201: {"description": "analysed and stored as a track (?store=true)",
          "headers": {"Location": {"schema": {"type": "string"}}}}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {
                     "schema": {"type": "object", "required": ["file"], "properties": {
                         "file": {"type": "string", "format": "binary"}}},
                     "encoding": {"file": {"contentType": ", ".join(AUDIO_MEDIA_TYPES)}}},
                 **{media: _AUDIO for media in AUDIO_MEDIA_TYPES}}}})
async def analyze_upload(request: Request, services: ServicesDep, store: bool = False,
                         preset: PresetName = DEFAULT_PRESET) -> JSONResponse:
    """Analyse an uploaded WAV, FLAC, OGG or MP3 file (multipart field ``file``, or the raw
    file as the body), capped at MUSICFN_MAX_UPLOAD_BYTES (413 beyond). ``?store=true`` also
    stores a normalised copy as a track (201 + Location; 503 + Retry-After at once while the
    object store is down)."""
    settings = services.settings
    if store:
        await services.storage.require()
    data, filename = await read_upload(request, settings.max_upload_bytes)
    decoded = await asyncio.to_thread(decode_audio, data, DecodeLimits.from_settings(settings))
    options = ClipOptions(preset=preset)
    refs: Any = analyze_task.remote(decoded.audio, decoded.sample_rate, None, options)
    analysis = await refs[0]
    body: dict[str, Any] = {"filename": filename, "analysis": analysis.model_dump(mode="json")}
    if not store:
        return JSONResponse(body)
    track = await store_upload(services.tracks, services.catalogue, settings, decoded.audio,
                               decoded.sample_rate, options, filename=filename)
    body["track"] = (await record(services, JobView(track=track))).model_dump(mode="json")
    return JSONResponse(body, status_code=201,
                        headers={"Location": f"/v1/generations/{track.id}"})
