"""The body of ``POST /v1/generations`` and its reference audio (melody or continuation).

The body is JSON (``GenerationBody``), or ``multipart/form-data`` with the same JSON as the
part ``request`` and the audio file as the part ``melody`` or ``continuation``. A reference
is either a stored track (``{"track_id": …}`` in the JSON) or that uploaded file. Everything
is checked before a job is queued: the served model can take it (its ``describe()``, cached
like the live limits), the audio's size, duration, rate and channels; an upload is then stored
under ``inputs/`` so the job carries a key and a sha256, never samples.

JSON is read and reported exactly as FastAPI would (``RequestValidationError``: 422 for the
wrong shape, 400 for a bad value), the whole body capped at MUSICFN_MAX_UPLOAD_BYTES (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from deployments.api.deps import Services
from deployments.api.uploads import read_body
from deployments.api_models import GenerationBody
from engines.audio_inputs import INPUT_KINDS, InputKind
from jobs.inputs import track_input, upload_input
from musicfn.errors import (
    InvalidRequestError,
    MusicfnError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedError,
)
from storage.inputs import delete_input
from storage.sidecar import InputRef, Inputs

CAPABILITIES_TTL_S = 5.0
REQUEST_PART = "request"
# Multipart framing (boundaries, part headers, the JSON part) on top of the file itself.
_MULTIPART_OVERHEAD = 256 * 1024


_BODY_REF = {"$ref": "#/components/schemas/GenerationBody"}
# The request body, declared here because the route reads it itself (JSON or multipart).
GENERATION_REQUEST_BODY: dict[str, Any] = {"required": True, "content": {
    "application/json": {"schema": _BODY_REF},
    "multipart/form-data": {
        "schema": {"type": "object", "required": [REQUEST_PART],
                   "properties": {REQUEST_PART: _BODY_REF,
                                  "melody": {"type": "string", "format": "binary"},
                                  "continuation": {"type": "string", "format": "binary"}},
                   "not": {"required": ["melody", "continuation"]}},
        "encoding": {REQUEST_PART: {"contentType": "application/json"},
                     "melody": {"contentType": "audio/*, application/octet-stream"},
                     "continuation": {"contentType": "audio/*, application/octet-stream"}}}}}


@dataclass
class Upload:
    """An audio file sent with the request, for ``kind``."""

    kind: InputKind
    data: bytes
    filename: str

    @property
    def sha256(self) -> str:
        """Digest of the bytes (part of the Idempotency-Key fingerprint)."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class LiveCapabilities:
    """What the served model supports (``melody``, ``continuation``), from the MusicGen
    deployment's ``describe()``, cached for a few seconds; the last known answer (or none:
    the engine's own check then decides) while it is unreachable."""

    engine: Any
    ttl_s: float = CAPABILITIES_TTL_S
    _value: dict[str, Any] | None = None
    _at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> dict[str, Any] | None:
        """The ``supports`` mapping, or None when never known."""
        async with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                with contextlib.suppress(Exception):
                    info = await asyncio.wait_for(self.engine.describe.remote(), 2.0)
                    self._value = dict(info["supports"])
                self._at = time.monotonic()
            return self._value


_capabilities: dict[int, LiveCapabilities] = {}


def capabilities(services: Services) -> LiveCapabilities:
    """The capability cache of this replica's engine handle."""
    key = id(services.engine)
    if key not in _capabilities:
        _capabilities.clear()  # one ingress replica serves one Services
        _capabilities[key] = LiveCapabilities(services.engine)
    return _capabilities[key]


async def read_generation_body(request: Request,
                               max_bytes: int) -> tuple[GenerationBody, Upload | None]:
    """The JSON body (or multipart's ``request`` part) and the uploaded file, if any."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    cap = max_bytes + _MULTIPART_OVERHEAD
    raw = await read_body(request, cap, PayloadTooLargeError(
        f"request body larger than {cap:,} bytes", code="upload_too_large"))
    if not multipart:
        return _validated(_json_document(raw, content_type)), None
    request._body = raw  # Starlette parses the form from the cached body
    form = await request.form(max_files=2, max_fields=4)
    part = form.get(REQUEST_PART)
    if isinstance(part, UploadFile):
        part = (await part.read()).decode("utf-8", errors="replace")
    if part is None:
        raise InvalidRequestError(f"multipart body needs a '{REQUEST_PART}' part with the JSON "
                                  "generation request", code="missing_request")
    body = _validated(_json_document(part.encode(), "application/json"))
    # The JSON part may come as a file too (a browser's FormData Blob): not an audio part.
    files = [(k, v) for k, v in form.multi_items()
             if isinstance(v, UploadFile) and k != REQUEST_PART]
    unknown = sorted({k for k, _ in form.multi_items()} - {REQUEST_PART, *INPUT_KINDS})
    if unknown:
        raise InvalidRequestError(f"unknown multipart part {unknown[0]!r}; send "
                                  f"'{REQUEST_PART}' and 'melody' or 'continuation'",
                                  code="invalid_multipart")
    if not files:  # the JSON alone, as a part: a plain generation
        return body, None
    if len(files) > 1:
        raise InvalidRequestError("multipart body takes one audio part: 'melody' or "
                                  "'continuation'", code="too_many_files")
    name, upload = files[0]
    kind: InputKind = "melody" if name == "melody" else "continuation"
    if body.melody is not None or body.continuation is not None:
        raise InvalidRequestError(f"{kind}: give the audio either as an uploaded part or as "
                                  "a track_id, once", code=f"invalid_{kind}")
    data = await upload.read()
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{kind}: upload larger than {max_bytes:,} bytes",
                                   code="upload_too_large")
    if not data:
        raise InvalidRequestError(f"{kind}: the uploaded file is empty", code="empty_upload")
    return body, Upload(kind, data, upload.filename or kind)


def _json_document(raw: bytes, content_type: str) -> Any:
    """What FastAPI would validate: the parsed JSON for a JSON (or absent) content type, the
    raw bytes otherwise, None for an empty body."""
    if not raw:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if content_type and not (message.get_content_maintype() == "application"
                             and (subtype == "json" or subtype.endswith("+json"))):
        return raw
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.reason
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", pos),
                                       "msg": "JSON decode error", "input": {},
                                       "ctx": {"error": reason}}]) from None


def _validated(document: Any) -> GenerationBody:
    try:
        return GenerationBody.model_validate(document)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        if document is None:
            errors = [{"type": "missing", "loc": ("body",), "msg": "Field required",
                       "input": None}]
        raise RequestValidationError(errors) from None


async def resolve_inputs(services: Services, body: GenerationBody, upload: Upload | None,
                         duration_s: float, model: str) -> Inputs | None:
    """The job's reference audio, checked (and an upload stored) before anything is queued.

    Raises UnsupportedError (``melody_unsupported`` / ``continuation_unsupported``) for a
    model that cannot take it, NotFoundError (``track_not_found``) for an unknown track,
    ConflictError for a track without audio yet, and the audio checks' errors."""
    kind: InputKind | None = upload.kind if upload is not None else (
        "melody" if body.melody is not None else
        "continuation" if body.continuation is not None else None)
    if kind is None:
        return None
    if not await _takes(services, model, kind):
        raise UnsupportedError(f"{kind}: model {model} does not take {kind} audio "
                               "(GET /v1/models lists what each model supports)",
                               code=f"{kind}_unsupported")
    ref: InputRef
    if upload is not None:
        await services.storage.require()
        ref = await asyncio.to_thread(upload_input, services.objects, upload.data, kind,
                                      output_s=duration_s,
                                      max_bytes=services.settings.max_upload_bytes)
    else:
        track_ref = body.melody if kind == "melody" else body.continuation
        track_id = track_ref.track_id if track_ref is not None else ""
        try:
            view = await services.view(track_id)
        except NotFoundError:
            raise NotFoundError(f"{kind}.track_id: no track {track_id}",
                                code="track_not_found") from None
        ref = track_input(view.track, kind, output_s=duration_s)
    return Inputs.model_validate({kind: ref})


async def _takes(services: Services, model: str, kind: InputKind) -> bool:
    """Whether ``model`` takes ``kind`` audio as far as is known now (unknown: the engine's
    own check decides when the job runs)."""
    if model == services.default_model:
        supports = await capabilities(services).get()
        return supports is None or bool(supports.get(kind, False))
    known = getattr((await services.models.get()).supports(model), kind)
    return known is None or bool(known)


async def discard_upload(services: Services, inputs: Inputs | None) -> None:
    """Remove a stored upload whose job was not created (refused, or an idempotent replay)."""
    if inputs is None:
        return
    for ref in inputs.refs().values():
        if ref.track_id is None:
            with contextlib.suppress(MusicfnError):
                await asyncio.to_thread(delete_input, services.objects, ref.key)
