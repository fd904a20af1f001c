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

from engines.requests import (
    MIN_DURATION_S,
    TEXT_PATTERN,
    GenerationRequest,
    Limits,
    check_limits,
    check_text,
    engine_of,
    parse_request,
)
from functions.encode import EncodeOptions, PcmSubtype
from functions.normalize import DEFAULT_PRESET, PresetName
from functions.pipeline import ClipOptions
from jobs.callbacks import EventFilter
from musicfn.errors import InputError, UnsupportedError
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


class GenerationBody(_Strict):
    """``POST /v1/generations``."""

    prompt: Text = Field(min_length=1, max_length=4000,
                         json_schema_extra={"pattern": TEXT_PATTERN},
                         description="not blank, no control or bidi-control characters; at "
                                     "most the live limit of characters")
    duration_s: StrictFloat = Field(ge=MIN_DURATION_S, allow_inf_nan=False,
                                    description="seconds, at most the live limit")
    engine: Literal["audiocraft", "synth"] | None = Field(
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
    bpm: StrictFloat | None = Field(default=None, ge=30, le=300, allow_inf_nan=False)
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

    @field_validator("stems")
    @classmethod
    def _no_repeats(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("each stem at most once")
        return v

    def generation_request(self, limits: Limits, served_model: str) -> GenerationRequest:
        """The engine request (validated, limits checked, seed assigned when missing);
        UnsupportedError (400) for an engine or model this deployment does not run."""
        if self.engine is not None and self.engine != engine_of(served_model):
            raise UnsupportedError(f"engine: this deployment runs {engine_of(served_model)!r}, "
                                   f"not {self.engine!r}", code="engine_not_served")
        if self.model is not None and self.model != served_model:
            raise UnsupportedError(f"model: this deployment serves {served_model!r}, not "
                                   f"{self.model!r}", code="model_not_served")
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

    def fingerprint(self) -> str:
        """sha256 of the canonical body: the same Idempotency-Key must come with this."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
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

