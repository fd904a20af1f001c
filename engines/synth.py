"""The synth engine: procedural stems at a target BPM, key and chord progression (CPU, offline).

It is the demo/CI engine: no weights, no GPU, deterministic for a seed, and musical enough for
the analysis functions to recover its tempo and key. Results are always labelled
``engine: synth``. A job with a ``stem`` renders that stem; a job without renders a mix of its
style's arrangement (``ARRANGEMENT`` when the prompt names no style).

Tempo, key and style come from the job's request fields first, then from the prompt text
(``engines.prompt_hints``: "70 bpm", "in D minor", "dark", "techno"), then from the style's
defaults, then from ``DEFAULT_BPM``/``DEFAULT_KEY``; ``plan_song`` says which won and why.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import (
    EngineInfo,
    EngineSupports,
    GeneratedAudio,
    GenerationJob,
    ProgressCallback,
)
from engines.prompt_hints import STYLES, PromptHints, read_prompt
from engines.synth_stems import PAN, VOICES, SongContext
from engines.theory import Chord, Key, parse_chord, parse_key
from musicfn.errors import LimitExceededError, UnsupportedError

ENGINE_NAME = "synth"
SAMPLE_RATE = 32_000
DEFAULT_BPM = 120.0
DEFAULT_KEY = "C major"
# The mix rendered for a job without a stem, with its level per stem.
ARRANGEMENT = {"drums": 0.9, "bass": 0.7, "piano": 0.5, "synth": 0.45}
_STEM_PEAK = 0.8
_FADE_IN_S = 0.02
_FADE_OUT_S = 0.25

Source = Literal["request", "prompt", "style", "default"]


class SongPlan(BaseModel):
    """What the synth renders for a job, where each choice came from, and what the prompt said."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bpm: float
    key: str = Field(description="canonical key name, e.g. 'A# minor'")
    chords: tuple[str, ...]
    style: str | None = Field(description="a name in prompt_hints.STYLES, or None")
    beats_per_bar: int
    arrangement: dict[str, float] = Field(description="stem → level of the mix")
    bpm_source: Source
    key_source: Source = Field(description="where the tonic came from (a mood word in the "
                                           "prompt may still set the mode)")
    style_source: Source | None
    hints: PromptHints = Field(description="what was read from the prompt")

    def metadata(self) -> dict[str, object]:
        """JSON-ready summary for result metadata (``synth: {...}``)."""
        return self.model_dump(mode="json")


class SynthEngine:
    """Stateless and thread-safe; ``generate`` renders each job independently."""

    def __init__(self, *, max_duration_s: float = 600.0, sample_rate: int = SAMPLE_RATE) -> None:
        self._supports = EngineSupports(
            melody=False,
            continuation=False,
            stereo=True,
            max_duration_s=float(max_duration_s),
            sample_rate=sample_rate,
            channels=2,
        )

    @property
    def supports(self) -> EngineSupports:
        """Stereo, no melody or continuation conditioning."""
        return self._supports

    def describe(self) -> EngineInfo:
        """Always ``engine: synth``, ``model: synth``, on the CPU."""
        return EngineInfo(
            engine=ENGINE_NAME,
            model=ENGINE_NAME,
            device="cpu",
            dtype="float32",
            versions={"numpy": np.__version__, "python": platform.python_version()},
        )

    def validate(self, job: GenerationJob) -> None:
        """Reject audio conditioning and durations over the engine maximum."""
        if job.melody is not None:
            raise UnsupportedError(
                "the synth engine has no melody conditioning", code="melody_unsupported"
            )
        if job.continuation is not None:
            raise UnsupportedError(
                "the synth engine cannot continue audio", code="continuation_unsupported"
            )
        if job.duration_s > self._supports.max_duration_s:
            raise LimitExceededError(
                f"duration_s {job.duration_s:g} is over the synth maximum of "
                f"{self._supports.max_duration_s:g} s",
                code="duration_limit",
            )

    def generate(
        self, jobs: Sequence[GenerationJob], progress: ProgressCallback | None = None
    ) -> list[GeneratedAudio]:
        """Render every job (one stem, or the default mix)."""
        out = []
        for job in jobs:
            out.append(GeneratedAudio(self.render(job), self._supports.sample_rate, len(jobs)))
            if progress is not None and job.request_id is not None:
                progress([job.request_id], 1.0)
        return out

    def check_health(self) -> None:
        """Nothing can break on the CPU that numpy would not raise on import."""
        np.ones(16).sum()

    def render(self, job: GenerationJob, plan: SongPlan | None = None) -> np.ndarray:
        """Stereo float32 audio for one job, as ``plan`` (default: ``plan_song(job)``) says."""
        plan = plan if plan is not None else plan_song(job)
        sr = self._supports.sample_rate
        song = SongContext(
            sample_rate=sr, samples=round(job.duration_s * sr), bpm=plan.bpm,
            key=parse_key(plan.key), chords=tuple(parse_chord(c) for c in plan.chords),
            rng=np.random.default_rng(job.seed), beats_per_bar=plan.beats_per_bar,
        )
        samples = song.samples
        if job.stem is not None:
            return _fade(_stem(song, job.stem, job.seed), sr)
        mixed = np.zeros((2, samples), dtype=np.float32)
        for index, (stem, level) in enumerate(plan.arrangement.items()):
            seed = (job.seed * 8 + index) % 2**63
            mixed += level * _stem(song, stem, seed)
        top = float(np.max(np.abs(mixed))) if samples else 0.0
        if top > _STEM_PEAK:
            mixed *= _STEM_PEAK / top
        return _fade(mixed, sr)


def song_harmony(key: str | None, chords: Sequence[str] | None) -> tuple[Key, tuple[Chord, ...]]:
    """The key and chord loop a song uses: given ones, else derived from each other or defaults."""
    parsed_chords = tuple(parse_chord(c) for c in chords) if chords else ()
    if key is not None:
        parsed_key = parse_key(key)
    elif parsed_chords:
        first = parsed_chords[0]
        parsed_key = Key(tonic=first.root, minor=first.quality in ("m", "min", "m7", "min7"))
    else:
        parsed_key = parse_key(DEFAULT_KEY)
    return parsed_key, parsed_chords or tuple(parsed_key.default_progression())


def plan_song(job: GenerationJob) -> SongPlan:
    """Tempo, key, chords, style and arrangement for ``job``.

    Request fields win over the prompt, the prompt over its style's defaults, and those over
    ``DEFAULT_BPM``/``DEFAULT_KEY``/``ARRANGEMENT``. A request ``style`` outside the vocabulary
    leaves the style to the prompt's words. A mood word ("dark", "happy") sets the mode of a
    key that the request and the prompt do not name in full.
    """
    hints = read_prompt(job.prompt)
    style_source: Source | None = None
    style_name = read_prompt(job.style).style if job.style else None
    if style_name is not None:
        style_source = "request"
    elif hints.style is not None:
        style_name, style_source = hints.style, "prompt"
    style = STYLES[style_name] if style_name is not None else None

    bpm_source: Source
    if job.bpm is not None:
        bpm, bpm_source = job.bpm, "request"
    elif hints.bpm is not None:
        bpm, bpm_source = hints.bpm, "prompt"
    elif style is not None:
        bpm, bpm_source = style.bpm, "style"
    else:
        bpm, bpm_source = DEFAULT_BPM, "default"

    key_source: Source
    if job.key is not None or job.chords:
        key, chords = song_harmony(job.key, job.chords)
        key_source = "request"
    else:
        if hints.key is not None:
            key, key_source = parse_key(hints.key), "prompt"
        elif style is not None:
            key, key_source = parse_key(style.key), "style"
        else:
            key, key_source = parse_key(DEFAULT_KEY), "default"
        if hints.mode is not None and hints.key is None:
            key = Key(tonic=key.tonic, minor=hints.mode == "minor")
        key, chords = song_harmony(key.name, None)
    return SongPlan(
        bpm=bpm, key=key.name, chords=tuple(c.name for c in chords), style=style_name,
        beats_per_bar=style.beats_per_bar if style is not None else 4,
        arrangement=dict(style.arrangement if style is not None else ARRANGEMENT),
        bpm_source=bpm_source, key_source=key_source, style_source=style_source, hints=hints,
    )


def _stem(song: SongContext, stem: str, seed: int) -> np.ndarray:
    """One stem on the song's grid, peak-normalised and panned: (2, samples) float32."""
    mono = VOICES[stem](replace(song, rng=np.random.default_rng(seed)))
    top = float(np.max(np.abs(mono))) if song.samples else 0.0
    if top > 0:
        mono = mono * (_STEM_PEAK / top)
    # Equal-power pan.
    angle = (PAN[stem] + 1.0) * np.pi / 4.0
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono]).astype(np.float32)


def _fade(audio: np.ndarray, sr: int) -> np.ndarray:
    n = audio.shape[1]
    fade_in = min(n, int(_FADE_IN_S * sr))
    fade_out = min(n, int(_FADE_OUT_S * sr))
    out = audio.copy()
    if fade_in:
        out[:, :fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    if fade_out:
        out[:, n - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    return out
