"""The synth engine: procedural stems at a target BPM, key and chord progression (CPU, offline).

It is the demo/CI engine: no weights, no GPU, deterministic for a seed, and musical enough for
the analysis functions to recover its tempo and key. Results are always labelled
``engine: synth``. A job with a ``stem`` renders that stem; a job without renders a mix of the
default arrangement.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

import numpy as np

from engines.base import (
    EngineInfo,
    EngineSupports,
    GeneratedAudio,
    GenerationJob,
    ProgressCallback,
)
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

    def render(self, job: GenerationJob) -> np.ndarray:
        """Stereo float32 audio for one job."""
        key, chords = song_harmony(job.key, job.chords)
        bpm = job.bpm if job.bpm is not None else DEFAULT_BPM
        samples = round(job.duration_s * self._supports.sample_rate)
        sr = self._supports.sample_rate
        if job.stem is not None:
            return _fade(_stem(job.stem, job.seed, samples, bpm, key, chords, self._supports), sr)
        mixed = np.zeros((2, samples), dtype=np.float32)
        for index, (stem, level) in enumerate(ARRANGEMENT.items()):
            seed = (job.seed * 8 + index) % 2**63
            mixed += level * _stem(stem, seed, samples, bpm, key, chords, self._supports)
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


def _stem(
    stem: str, seed: int, samples: int, bpm: float, key: Key, chords: tuple[Chord, ...],
    supports: EngineSupports,
) -> np.ndarray:
    ctx = SongContext(
        sample_rate=supports.sample_rate,
        samples=samples,
        bpm=bpm,
        key=key,
        chords=chords,
        rng=np.random.default_rng(seed),
    )
    mono = VOICES[stem](ctx)
    top = float(np.max(np.abs(mono))) if samples else 0.0
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
