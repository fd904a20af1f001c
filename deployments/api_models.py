"""HTTP request and response bodies of the ingress (pydantic, strict: unknown fields are 422)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.requests import GenerationRequest, Limits, parse_request
from functions.encode import EncodeOptions, PcmSubtype
from functions.normalize import DEFAULT_PRESET, PresetName
from functions.pipeline import ClipOptions
from jobs.callbacks import EventFilter
from storage.jobs_schema import JobView
from storage.sidecar import Sidecar

_BIT_DEPTHS: dict[int, PcmSubtype] = {16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoudnessBody(_Strict):
    """A preset, or an explicit target; an explicit value overrides the preset's."""

    preset: PresetName | None = DEFAULT_PRESET
    target_lufs: float | None = Field(default=None, ge=-40, le=-5, allow_inf_nan=False)
    ceiling_dbtp: float | None = Field(default=None, ge=-12, le=0, allow_inf_nan=False)


class OutputBody(_Strict):
    format: Literal["wav", "flac"] = "wav"
    bit_depth: Literal[16, 24, 32] = 16
    sample_rate: Literal[44_100, 48_000] | None = None


class GenerationBody(_Strict):
    """``POST /v1/generations``."""

    prompt: str = Field(min_length=1, max_length=4000)
    duration_s: float = Field(gt=0, allow_inf_nan=False)
    engine: Literal["audiocraft", "synth"] | None = None
    model: str | None = Field(default=None, max_length=200)
    top_k: int | None = Field(default=None, ge=0, le=2048)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    temperature: float | None = Field(default=None, ge=0, le=5, allow_inf_nan=False)
    cfg_coef: float | None = Field(default=None, ge=0, le=20, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stems: list[str] | None = Field(default=None, max_length=7)
    bpm: float | None = None
    key: str | None = Field(default=None, max_length=16)
    chords: list[str] | None = Field(default=None, max_length=64)
    style: str | None = Field(default=None, max_length=100)
    loudness: LoudnessBody = LoudnessBody()
    output: OutputBody = OutputBody()
    callback_url: str | None = Field(default=None, max_length=2048)
    webhook_events_filter: list[EventFilter] | None = Field(
        default=None, max_length=2,
        description="callbacks to send: 'start' (running) and/or 'completed' (any end); "
                    "default ['completed']")

    def generation_request(self, limits: Limits, default_model: str) -> GenerationRequest:
        """The engine request (validated, limits checked, seed assigned when missing)."""
        params = {k: v for k, v in (("top_k", self.top_k), ("top_p", self.top_p),
                                    ("temperature", self.temperature),
                                    ("cfg_coef", self.cfg_coef)) if v is not None}
        model = self.model or ("synth" if self.engine == "synth" else default_model)
        data: dict[str, Any] = {"prompt": self.prompt, "duration_s": self.duration_s,
                                "model": model, "params": params, "seed": self.seed,
                                "stems": self.stems, "bpm": self.bpm, "key": self.key,
                                "chords": self.chords, "style": self.style}
        return parse_request({k: v for k, v in data.items() if v is not None}, limits)

    def clip_options(self) -> ClipOptions:
        fmt = self.output.format
        return ClipOptions(
            preset=self.loudness.preset, target_lufs=self.loudness.target_lufs,
            ceiling_dbtp=self.loudness.ceiling_dbtp,
            encoding=EncodeOptions(format=fmt, subtype=_BIT_DEPTHS[self.output.bit_depth],
                                   sample_rate=self.output.sample_rate))

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


class BatchBody(BaseModel):
    """``POST /v1/batches``: what to process."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=1024,
                        description="s3://<bucket>/incoming/<prefix> (or incoming/<prefix>)")
