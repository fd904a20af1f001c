"""Request and response models at the generation boundary (pydantic v2).

``parse_request`` is the one entry point: it turns a dict or model into a validated
``GenerationRequest`` and raises only musicfn errors (``InvalidRequestError`` for bad shape or
values, ``LimitExceededError`` for values over the configured ``Limits``); both name the field.

Numbers are strict (a boolean or a string is not a number) and text refuses control and
bidirectional-control characters (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069: "Trojan
Source" reordering), so what is stored and shown is what was typed.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from engines import theory
from engines.audio_inputs import (
    INPUT_CHANNELS,
    MAX_INPUT_AUDIO_S,
    MAX_INPUT_SAMPLE_RATE,
    MIN_INPUT_SAMPLE_RATE,
)
from musicfn.errors import InvalidRequestError, LimitExceededError

# Hugging Face ids audiocraft can load; anything else must be a local checkpoint directory.
KNOWN_MODELS = (
    "facebook/musicgen-small",
    "facebook/musicgen-medium",
    "facebook/musicgen-large",
    "facebook/musicgen-melody",
    "facebook/musicgen-melody-large",
    "facebook/musicgen-stereo-small",
    "facebook/musicgen-stereo-medium",
    "facebook/musicgen-stereo-large",
    "facebook/musicgen-stereo-melody",
    "facebook/musicgen-stereo-melody-large",
)
SYNTH_MODEL = "synth"
# Models the transformers engine runs are named "transformers:<HF id | local:<label>>".
TRANSFORMERS_PREFIX = "transformers:"
# A locally built checkpoint is named "local:<label>" in requests and results.
_LOCAL_MODEL_RE = re.compile(r"^local:[A-Za-z0-9._-]{1,64}$")

STEMS = ("drums", "bass", "guitar", "vocals", "piano", "synth", "other")
Stem = Literal["drums", "bass", "guitar", "vocals", "piano", "synth", "other"]
_STEM_ALIASES = {"pad": "synth", "keys": "piano", "vocal": "vocals", "drum": "drums"}

# Characters text fields refuse: C0/C1 controls and the Unicode Bidi_Control characters.
_FORBIDDEN_CHARS = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
# What str.strip() removes that is not forbidden anyway (the blanks of a blank text).
_BLANK_CHARS = " \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_FORBIDDEN_RE = re.compile(f"[{_FORBIDDEN_CHARS}]")
# The same rule as a JSON Schema / pydantic pattern: no forbidden character, one non-blank.
TEXT_PATTERN = f"^[^{_FORBIDDEN_CHARS}]*[^{_FORBIDDEN_CHARS}{_BLANK_CHARS}][^{_FORBIDDEN_CHARS}]*$"
MAX_SEED = 2**63 - 1
# Shorter clips are not music and round to no samples at some rates: refused at submission.
MIN_DURATION_S = 0.1
# Absolute ceilings; the configured Limits are usually much lower.
_HARD_MAX_PROMPT = 4000


def _stem_alias(value: object) -> object:
    return _STEM_ALIASES.get(value, value) if isinstance(value, str) else value


def check_text(value: str) -> str:
    """``value`` stripped; ValueError for forbidden characters or a blank text."""
    if _FORBIDDEN_RE.search(value):
        raise ValueError("must not contain control or bidirectional-control characters")
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def served_name(engine: str, name_or_dir: str) -> str:
    """How a model is named in requests and results: its HF id or ``local:<dir name>`` for a
    checkpoint directory, prefixed ``transformers:`` for the transformers engine; ``synth``."""
    if engine == "synth":
        return SYNTH_MODEL
    bare = name_or_dir.removeprefix(TRANSFORMERS_PREFIX)
    if bare not in KNOWN_MODELS and not _LOCAL_MODEL_RE.match(bare):
        bare = f"local:{Path(bare).resolve().name}"
    return TRANSFORMERS_PREFIX + bare if engine == "transformers" else bare


def engine_of(model: str) -> str:
    """The engine that runs ``model``: synth, transformers (``transformers:`` names) or
    audiocraft."""
    if model == SYNTH_MODEL:
        return "synth"
    return "transformers" if model.startswith(TRANSFORMERS_PREFIX) else "audiocraft"


class GenerationParams(BaseModel):
    """Sampling parameters. A batch only ever contains requests with equal params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_k: StrictInt = Field(default=250, ge=0, le=2048)
    top_p: StrictFloat = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=5.0, allow_inf_nan=False)
    cfg_coef: StrictFloat = Field(default=3.0, ge=0.0, le=20.0, allow_inf_nan=False)
    extend_stride: StrictFloat = Field(default=18.0, gt=0.0, lt=30.0, allow_inf_nan=False)


class AudioInput(BaseModel):
    """Audio supplied with a request (melody or continuation prompt), channels × samples."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    samples: np.ndarray
    sample_rate: int = Field(ge=MIN_INPUT_SAMPLE_RATE, le=MAX_INPUT_SAMPLE_RATE)

    @field_validator("samples", mode="before")
    @classmethod
    def _as_float32_2d(cls, v: Any) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] not in INPUT_CHANNELS or arr.shape[1] == 0:
            raise ValueError(
                f"audio must be (channels, samples) with 1 or 2 channels, got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError("audio contains NaN or infinite samples")
        return arr

    @field_serializer("samples", when_used="json")
    def _as_lists(self, v: np.ndarray) -> list[list[float]]:
        # JSON (a job's payload in the catalogue) carries the samples as nested lists.
        out: list[list[float]] = v.tolist()
        return out

    @model_validator(mode="after")
    def _not_too_long(self) -> AudioInput:
        if self.samples.shape[1] / self.sample_rate > MAX_INPUT_AUDIO_S:
            raise ValueError(f"input audio longer than {MAX_INPUT_AUDIO_S:.0f} s")
        return self

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[1] / self.sample_rate)


class GenerationRequest(BaseModel):
    """One generation: a prompt, a duration and optional stems, key, chords, melody or audio."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    prompt: str = Field(max_length=_HARD_MAX_PROMPT)
    duration_s: StrictFloat = Field(ge=MIN_DURATION_S, allow_inf_nan=False)
    model: str | None = None
    params: GenerationParams = GenerationParams()
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    stems: tuple[Annotated[Stem, BeforeValidator(_stem_alias)], ...] | None = None
    bpm: StrictFloat | None = Field(default=None, ge=theory.MIN_BPM, le=theory.MAX_BPM,
                                    allow_inf_nan=False)
    key: str | None = None
    chords: tuple[str, ...] | None = None
    style: str | None = Field(default=None, max_length=100)
    melody: AudioInput | None = None
    continuation: AudioInput | None = None
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")

    @field_validator("prompt", "style")
    @classmethod
    def _clean_text(cls, v: str | None) -> str | None:
        return None if v is None else check_text(v)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        bare = None if v is None else v.removeprefix(TRANSFORMERS_PREFIX)
        if bare is None or bare in KNOWN_MODELS or v == SYNTH_MODEL \
                or _LOCAL_MODEL_RE.match(bare):
            return v
        raise ValueError(f"unknown model {v!r}; known: {', '.join(KNOWN_MODELS)}, {SYNTH_MODEL}")

    @field_validator("stems")
    @classmethod
    def _unique_stems(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Each stem once, in order of first mention (an alias and its stem are one)."""
        if v is not None and not v:
            raise ValueError("must list at least one stem")
        return None if v is None else tuple(dict.fromkeys(v))

    @field_validator("key")
    @classmethod
    def _valid_key(cls, v: str | None) -> str | None:
        return None if v is None else theory.parse_key(v).name

    @field_validator("chords")
    @classmethod
    def _valid_chords(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not 1 <= len(v) <= 16:
            raise ValueError("chords must list 1 to 16 chord symbols")
        return tuple(theory.parse_chord(c).name for c in v)

    @model_validator(mode="after")
    def _one_audio_prompt(self) -> GenerationRequest:
        if self.melody is not None and self.continuation is not None:
            raise ValueError("give either melody or continuation audio, not both")
        return self


class Limits(BaseModel):
    """Per-request limits, enforced before anything reaches an engine (live via user_config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_duration_s: float = Field(default=30.0, gt=0.0, le=600.0)
    max_prompt_chars: int = Field(default=500, ge=1, le=_HARD_MAX_PROMPT)
    max_stems: int = Field(default=len(STEMS), ge=1, le=len(STEMS))
    max_pending_jobs: int = Field(default=64, ge=1, le=10_000)


class StemAudio(BaseModel):
    """One generated stem."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    prompt: str
    seed: int
    audio: np.ndarray


class GenerationResult(BaseModel):
    """The audio (float32, channels × samples) and everything needed to reproduce it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    request_id: str | None
    engine: str
    model: str
    seed: int
    sample_rate: int
    audio: np.ndarray
    prompt: str
    duration_s: float
    params: GenerationParams
    stems: dict[str, StemAudio] | None = None
    batch_size: int = 1


def _error_code(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    if not loc:
        return "invalid_request"
    if loc[0] == "model":
        return "unknown_model"
    if loc[0] == "stems" and err.get("type") == "literal_error":
        return "unknown_stem"
    return f"invalid_{loc[0]}"


def check_limits(limits: Limits, *, duration_s: float, prompt_chars: int, stems: int) -> None:
    """Raise LimitExceededError (naming the field) for a value over ``limits``."""
    if not math.isfinite(duration_s) or duration_s > limits.max_duration_s:
        raise LimitExceededError(
            f"duration_s: {duration_s:g} is over the limit of {limits.max_duration_s:g} s",
            code="duration_limit",
        )
    if prompt_chars > limits.max_prompt_chars:
        raise LimitExceededError(
            f"prompt: {prompt_chars} characters, over the limit of {limits.max_prompt_chars}",
            code="prompt_limit",
        )
    if stems > limits.max_stems:
        raise LimitExceededError(
            f"stems: {stems} requested, over the limit of {limits.max_stems}",
            code="stems_limit",
        )


def parse_request(data: GenerationRequest | Mapping[str, Any], limits: Limits) -> GenerationRequest:
    """Validate ``data`` and check it against ``limits``; assign a random seed when none is given.

    Raises:
        InvalidRequestError: malformed or out-of-domain values (code names the field).
        LimitExceededError: a value beyond the configured limits.
    """
    try:
        req = (
            data if isinstance(data, GenerationRequest) else GenerationRequest.model_validate(data)
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidRequestError(f"{where}: {msg}", code=_error_code(first)) from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"malformed request: {exc}") from None
    check_limits(limits, duration_s=req.duration_s, prompt_chars=len(req.prompt),
                 stems=len(req.stems) if req.stems is not None else 0)
    if req.seed is None:
        req = req.model_copy(update={"seed": secrets.randbelow(2**31)})
    return req
