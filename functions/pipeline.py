"""The per-clip chain normalise -> analyse -> encode, in-process (the Ray chain is in tasks.py)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.analysis import analyze
from functions.audio import Audio
from functions.encode import EncodeOptions, encode
from functions.normalize import DEFAULT_PRESET, normalize, resolve_levels
from functions.results import (
    AnalysisResult,
    EncodeFacts,
    NormalizeReport,
    ProcessedClip,
    StageTimings,
)
from functions.waveform import DEFAULT_BUCKETS, MAX_BUCKETS


class ClipOptions(BaseModel):
    """Everything the chain needs: loudness target, analysis detail, encoding.

    ``target_lufs`` / ``ceiling_dbtp`` override the preset's values when given; without a
    preset they default to ``functions.normalize.DEFAULT_PRESET``'s.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str | None = DEFAULT_PRESET
    target_lufs: float | None = None
    ceiling_dbtp: float | None = None
    waveform_buckets: int = Field(default=DEFAULT_BUCKETS, ge=1, le=MAX_BUCKETS)
    waveform_bits: Literal[8, 16] = 8
    encoding: EncodeOptions = EncodeOptions()

    def levels(self) -> tuple[float, float]:
        """``(target_lufs, ceiling_dbtp)`` after applying the preset and the overrides."""
        return resolve_levels(self.preset, self.target_lufs, self.ceiling_dbtp)


def run_normalize(
    audio: Audio, sample_rate: int, options: ClipOptions
) -> tuple[Audio, NormalizeReport, float]:
    """Stage 1: normalised audio, its report, seconds spent."""
    start = time.perf_counter()
    target, ceiling = options.levels()
    out, report = normalize(audio, sample_rate, target, ceiling)
    report = report.model_copy(update={"preset": options.preset})
    return out, report, time.perf_counter() - start


def run_analyze(
    audio: Audio, sample_rate: int, report: NormalizeReport | None, options: ClipOptions
) -> tuple[AnalysisResult, float]:
    """Stage 2: analysis of the normalised audio, seconds spent."""
    start = time.perf_counter()
    result = analyze(
        audio,
        sample_rate,
        buckets=options.waveform_buckets,
        bits=options.waveform_bits,
        loudness=report.after if report is not None else None,
    )
    return result, time.perf_counter() - start


def run_encode(
    audio: Audio, sample_rate: int, options: ClipOptions
) -> tuple[bytes, EncodeFacts, float]:
    """Stage 3: encoded bytes, their facts, seconds spent."""
    start = time.perf_counter()
    data, facts = encode(audio, sample_rate, options.encoding)
    return data, facts, time.perf_counter() - start


def assemble(
    report: NormalizeReport,
    normalize_s: float,
    analysis: AnalysisResult,
    analyze_s: float,
    data: bytes,
    facts: EncodeFacts,
    encode_s: float,
) -> ProcessedClip:
    """The sidecar-ready result of one clip; ``total_s`` is the sum of the stages' work."""
    timings = StageTimings(
        normalize_s=normalize_s,
        analyze_s=analyze_s,
        encode_s=encode_s,
        total_s=normalize_s + analyze_s + encode_s,
    )
    return ProcessedClip(
        audio=data, loudness=report, analysis=analysis, encoding=facts, timings=timings
    )


def process_clip(
    audio: Audio, sample_rate: int, options: ClipOptions | None = None
) -> ProcessedClip:
    """Normalise, analyse and encode one clip in this process."""
    options = options or ClipOptions()
    normalized, report, normalize_s = run_normalize(audio, sample_rate, options)
    analysis, analyze_s = run_analyze(normalized, sample_rate, report, options)
    data, facts, encode_s = run_encode(normalized, sample_rate, options)
    return assemble(report, normalize_s, analysis, analyze_s, data, facts, encode_s)
