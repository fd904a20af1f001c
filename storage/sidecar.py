"""The track sidecar: ``<id>.json`` beside the audio, the commit marker of a track.

A sidecar holds everything the catalogue row holds, so the catalogue can be rebuilt from the
bucket alone. The same model is the catalogue's record of in-flight jobs (status pending /
processing / failed), which have no sidecar in the bucket yet.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from musicfn.errors import InvalidRequestError
from musicfn.validation import validation_message

SIDECAR_SCHEMA_VERSION = 1

TrackKind = Literal["generation", "upload"]
TrackStatus = Literal["pending", "processing", "completed", "failed", "canceled"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled"})
Mode = Literal["major", "minor"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioFacts(_Model):
    """The stored audio object: encoding and content facts."""

    format: str  # "wav", "flac", ...
    subtype: str | None = None  # "PCM_16", "PCM_24", "FLOAT", ...
    sample_rate: int = Field(gt=0)
    channels: int = Field(ge=1)
    bit_depth: int | None = None
    frames: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    etag: str | None = None


class Summary(_Model):
    """The analysis figures the catalogue indexes and filters on."""

    bpm: float | None = None
    bpm_confidence: float | None = None
    key: str | None = None  # tonic, e.g. "C", "F#"
    mode: Mode | None = None
    key_confidence: float | None = None
    lufs: float | None = None
    true_peak_dbtp: float | None = None
    peak_dbfs: float | None = None

    @field_validator("*")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None  # -inf LUFS of silence is "no loudness", not a number to index
        return v


class ErrorInfo(_Model):
    code: str
    message: str
    stage: str | None = None


class SourceRef(_Model):
    """The uploaded object a processed track came from (triggers)."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    removed_at: datetime | None = None  # the source object was deleted after processing


class InputRef(_Model):
    """Reference audio a generation was conditioned on (its provenance): a stored track
    (``track_id``, its audio ``key``) or an upload (under ``inputs/``), with the stored
    bytes' sha256 and the audio facts checked at submission."""

    track_id: str | None = None
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    duration_s: float = Field(gt=0)
    sample_rate: int = Field(gt=0)
    channels: int = Field(ge=1)


class Inputs(_Model):
    """The reference audio of a generation: a melody or a prompt to continue (one at most)."""

    melody: InputRef | None = None
    continuation: InputRef | None = None

    def refs(self) -> dict[str, InputRef]:
        """The references given, by kind."""
        return {k: v for k, v in (("melody", self.melody),
                                  ("continuation", self.continuation)) if v is not None}


class Sidecar(_Model):
    """One track (or job) record: versioned, JSON-serialisable, the source of catalogue rows."""

    schema_version: int = SIDECAR_SCHEMA_VERSION
    id: str
    kind: TrackKind
    status: TrackStatus
    created_at: datetime
    completed_at: datetime | None = None
    prompt: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    engine: str | None = None
    model: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    audio_key: str | None = None
    audio: AudioFacts | None = None
    summary: Summary = Field(default_factory=Summary)
    loudness: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    source: SourceRef | None = None
    inputs: Inputs | None = None

    @field_validator("created_at", "completed_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return v

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if not 1 <= v <= SIDECAR_SCHEMA_VERSION:
            raise ValueError(f"sidecar schema_version {v} not supported by this musicfn "
                             f"(max {SIDECAR_SCHEMA_VERSION})")
        return v

    def to_json(self) -> bytes:
        """Canonical JSON bytes (what is stored in the bucket and the catalogue). A track
        without reference audio has no ``inputs`` key: its bytes are what they always were."""
        exclude = {"inputs"} if self.inputs is None else None
        return self.model_dump_json(exclude=exclude).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Sidecar:
        """Parse a stored sidecar, raising InvalidRequestError naming what is wrong."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidRequestError(f"invalid sidecar: {validation_message(exc)}",
                                      code="invalid_sidecar") from None
