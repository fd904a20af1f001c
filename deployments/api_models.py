"""HTTP request and response bodies of the ingress (pydantic).

Request bodies are strict: an unknown field, a missing one or a field of the wrong JSON type
(``"duration_s": true`` or ``"8"``) is a malformed body (422); a value of the right type that
is not allowed is a bad value (400, the field named). Every rule a value must meet is in the
model, so the OpenAPI schema states it; the live limits and the served engine are added to the
document by ``deployments.api.openapi``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    field_validator,
    model_validator,
)

from deployments.served_models import ModelTable
from engines import theory
from engines.loader import EngineName
from engines.requests import (
    MIN_DURATION_S,
    TEXT_PATTERN,
    GenerationRequest,
    Limits,
    check_limits,
    check_text,
    parse_request,
)
from functions.options import DEFAULT_PRESET, ClipOptions, EncodeOptions, PcmSubtype, PresetName
from jobs.callbacks import EventFilter
from musicfn.errors import InputError
from musicfn.validation import integral
from storage.jobs_schema import JobView
from storage.sidecar import Sidecar

Format = Literal["wav", "flac"]
# I-JSON (RFC 7493): integers beyond 2**53 - 1 are not interoperable; most clients and
# validators read numbers as doubles, so a larger seed could change on the way.
MAX_JSON_SEED = 2**53 - 1
_BIT_DEPTHS: dict[int, PcmSubtype] = {16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}
StemName = Literal["drums", "bass", "guitar", "vocals", "piano", "synth", "other",
                   "pad", "keys", "vocal", "drum"]  # the last four: aliases
KEY_PATTERN = r"^[A-Ga-g][#b]? ?(major|minor|maj|min|m)?$"
CHORD_PATTERN = r"^[A-G][#b]?(maj7|m7|min7|7|maj|min|m|dim|aug|sus2|sus4)?$"
ChordSymbol = Annotated[str, Field(pattern=CHORD_PATTERN, description="e.g. C, F#m, Bbmaj7")]
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# The shape of a callback URL: http(s), a plain host, a port in range, printable ASCII. Which
# addresses it may name is the SSRF guard's policy (jobs.callbacks), beyond any pattern.
CALLBACK_PATTERN = (r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9._~-]+(:" + _PORT
                    + r")?([/?#][!-~]*)?$")
# A batch source segment: not "..", no backslash, no control character.
_C = r"/\\\x00-\x1f"
_SEGMENT = rf"([^.{_C}][^{_C}]*|\.[^.{_C}][^{_C}]*|\.\.[^{_C}]+|\.)"


def batch_source_pattern(bucket: str, incoming: str) -> str:
    """The batch sources this deployment takes: ``[s3://<bucket>/]<incoming>[/prefix/]``."""
    bucket, incoming = bucket.replace(".", r"\."), incoming.replace(".", r"\.")
    return rf"^(s3://{bucket}/)?{incoming}(/{_SEGMENT})*/?$"


def _text(value: str) -> str:
    check_text(value)  # the engine request trims it; the body keeps what was sent
    return value


def _url_shape(value: str) -> str:
    if not re.fullmatch(CALLBACK_PATTERN, value):
        raise ValueError("must be http(s)://host[:port][/path] in printable ASCII (a host of "
                         "letters, digits, '.', '-', '_' or '~'; no credentials)")
    return value


Text = Annotated[str, AfterValidator(_text)]
CallbackUrl = Annotated[str, AfterValidator(_url_shape)]


def _unsupported_outputs() -> list[tuple[str, int]]:
    """(format, bit depth) pairs the encoder refuses (its rule, asked once at import)."""
    out = []
    for fmt in ("wav", "flac"):
        for depth, subtype in _BIT_DEPTHS.items():
            try:
                EncodeOptions(format=fmt, subtype=subtype).resolved_subtype()
            except InputError:
                out.append((fmt, depth))
    return out


_UNSUPPORTED_OUTPUTS = _unsupported_outputs()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LoudnessBody(_Strict):
    """A preset, or an explicit target; an explicit value overrides the preset's."""

    preset: PresetName | None = DEFAULT_PRESET
    target_lufs: StrictFloat | None = Field(default=None, ge=-40, le=-5, allow_inf_nan=False)
    ceiling_dbtp: StrictFloat | None = Field(default=None, ge=-12, le=0, allow_inf_nan=False)


class OutputBody(_Strict):
    """The stored file: container, PCM bit depth (FLAC: 16 or 24) and sample rate."""

    model_config = ConfigDict(json_schema_extra={"not": {"anyOf": [
        {"properties": {"format": {"const": f}, "bit_depth": {"const": d}},
         "required": ["format", "bit_depth"]} for f, d in _UNSUPPORTED_OUTPUTS]}})

    format: Format = "wav"
    bit_depth: Literal[16, 24, 32] = 16
    sample_rate: Literal[44_100, 48_000] | None = None

    @model_validator(mode="after")
    def _encodable(self) -> OutputBody:
        if (self.format, self.bit_depth) in _UNSUPPORTED_OUTPUTS:
            raise ValueError(f"bit_depth {self.bit_depth} is not possible in {self.format}")
        return self


TRACK_ID_PATTERN = r"^[0-7][0-9a-hjkmnp-tv-z]{25}$"


class TrackRef(_Strict):
    """A stored track used as reference audio (a generation, or an upload stored with
    ``/v1/analyses?store=true``)."""

    track_id: str = Field(pattern=TRACK_ID_PATTERN, description="a completed track's id")


class GenerationBody(_Strict):
    """``POST /v1/generations`` (as JSON, or as the ``request`` part of a multipart body whose
    other part is the melody or continuation audio file)."""

    prompt: Text = Field(min_length=1, max_length=4000,
                         json_schema_extra={"pattern": TEXT_PATTERN},
                         description="not blank, no control or bidi-control characters; at "
                                     "most the live limit of characters")
    duration_s: StrictFloat = Field(ge=MIN_DURATION_S, allow_inf_nan=False,
                                    description="seconds, at most the live limit")
    engine: EngineName | None = Field(
        default=None, description="must be the engine this deployment runs")
    model: str | None = Field(default=None, max_length=200,
                              description="must be the model this deployment serves")
    top_k: Annotated[int, Field(ge=0, le=2048), BeforeValidator(integral)] | None = None
    top_p: StrictFloat | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    temperature: StrictFloat | None = Field(default=None, ge=0, le=5, allow_inf_nan=False)
    cfg_coef: StrictFloat | None = Field(default=None, ge=0, le=20, allow_inf_nan=False)
    seed: Annotated[int, Field(ge=0, le=MAX_JSON_SEED), BeforeValidator(integral)] | None = None
    stems: list[StemName] | None = Field(
        default=None, min_length=1, max_length=7, json_schema_extra={"uniqueItems": True},
        description="each at most once; an alias (pad, keys, vocal, drum) and its stem count "
                    "as one")
    bpm: StrictFloat | None = Field(default=None, ge=theory.MIN_BPM, le=theory.MAX_BPM,
                                    allow_inf_nan=False)
    key: str | None = Field(default=None, max_length=16, pattern=KEY_PATTERN)
    chords: list[ChordSymbol] | None = Field(default=None, min_length=1, max_length=16)
    style: Text | None = Field(default=None, max_length=100,
                               json_schema_extra={"pattern": TEXT_PATTERN})
    loudness: LoudnessBody = LoudnessBody()
    output: OutputBody = OutputBody()
    callback_url: CallbackUrl | None = Field(
        default=None, max_length=2048, json_schema_extra={"pattern": CALLBACK_PATTERN},
        description="http(s) URL; never a link-local, multicast, reserved, unspecified or "
                    "metadata address (SSRF guard: 400 callback_url_not_allowed)")
    webhook_events_filter: list[EventFilter] | None = Field(
        default=None, max_length=2,
        description="callbacks to send: 'start' (running) and/or 'completed' (any end); "
                    "default ['completed']")
    melody: TrackRef | None = Field(
        default=None, description="a stored track whose melody conditions the generation "
                                  "(melody models only); or upload the file (multipart)")
    continuation: TrackRef | None = Field(
        default=None, description="a stored track to continue: the result starts with it "
                                  "(shorter than duration_s and 30 s); or upload the file")

    @field_validator("stems")
    @classmethod
    def _no_repeats(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("each stem at most once")
        return v

    @model_validator(mode="after")
    def _one_reference(self) -> GenerationBody:
        if self.melody is not None and self.continuation is not None:
            raise ValueError("give either melody or continuation audio, not both")
        return self

    def generation_request(self, limits: Limits,
                           served: str | ModelTable) -> GenerationRequest:
        """The engine request (validated, limits checked, seed assigned when missing) on the
        served model it asks for (``served``: the deployment's model table, or its one model);
        UnsupportedError (400) for an engine or model this deployment does not run."""
        table = served if isinstance(served, ModelTable) else ModelTable.single(served)
        served_model = table.resolve(self.engine, self.model)
        # The limits count what was sent (the engine request trims the prompt, merges stems).
        check_limits(limits, duration_s=self.duration_s, prompt_chars=len(self.prompt),
                     stems=len(self.stems or ()))
        params = {k: v for k, v in (("top_k", self.top_k), ("top_p", self.top_p),
                                    ("temperature", self.temperature),
                                    ("cfg_coef", self.cfg_coef)) if v is not None}
        data: dict[str, Any] = {"prompt": self.prompt, "duration_s": float(self.duration_s),
                                "model": served_model, "params": params, "seed": self.seed,
                                "stems": self.stems, "bpm": self.bpm, "key": self.key,
                                "chords": self.chords, "style": self.style}
        return parse_request({k: v for k, v in data.items() if v is not None}, limits)

    def clip_options(self) -> ClipOptions:
        """How the clip is normalised and encoded."""
        fmt = self.output.format
        encoding = EncodeOptions(format=fmt, subtype=_BIT_DEPTHS[self.output.bit_depth],
                                 sample_rate=self.output.sample_rate)
        return ClipOptions(preset=self.loudness.preset, target_lufs=self.loudness.target_lufs,
                           ceiling_dbtp=self.loudness.ceiling_dbtp, encoding=encoding)

    def fingerprint(self, upload_sha256: str | None = None) -> str:
        """sha256 of the canonical body (and of an uploaded file's digest): the same
        Idempotency-Key must come with this."""
        # Without reference audio the fingerprint is what it was before these fields existed.
        document = self.model_dump(mode="json", exclude={
            name for name in ("melody", "continuation") if getattr(self, name) is None})
        if upload_sha256 is not None:
            document["upload_sha256"] = upload_sha256
        canonical = json.dumps(document, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class GenerationRecord(BaseModel):
    """``GET /v1/generations/{id}``: the catalogue record plus the live state of its job."""

    id: str
    status: str
    progress: float | None = None
    attempts: int | None = None
    cancel_requested: bool = False
    webhooks: list[dict[str, Any]] = Field(default_factory=list)
    audio_url: str | None = None
    record: Sidecar

    @classmethod
    def of(cls, view: JobView, *, audio_url: str | None = None) -> GenerationRecord:
        """The record of a track and its job (``view``)."""
        sc, job = view.track, view.job
        done = 1.0 if sc.status == "completed" else (job.progress if job else None)
        return cls(id=sc.id, status=sc.status, progress=done,
                   attempts=job.attempts if job else None,
                   cancel_requested=bool(job and job.cancel_requested),
                   webhooks=list((job.result or {}).get("deliveries", [])) if job else [],
                   audio_url=audio_url, record=sc)


class BatchBody(_Strict):
    """``POST /v1/batches``: what to process."""

    source: str = Field(min_length=1, max_length=1024,
                        description="s3://<bucket>/incoming/<prefix> (or incoming/<prefix>)")

