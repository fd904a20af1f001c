"""The per-clip chain normalise -> analyse -> encode, in-process (the Ray chain is in tasks.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from functions.options import ClipOptions as ClipOptions
from functions.results import (
    AnalysisResult,
    EncodeFacts,
    NormalizeReport,
    ProcessedClip,
    StageTimings,
)

if TYPE_CHECKING:
    from functions.audio import Audio

# The stages import numpy / scipy / soundfile inside the functions below, so importing this
# module for ``ClipOptions`` (Serve replicas, the CLI) stays light; the Ray tasks pay for the
# imports once per worker (``functions.tasks.warm_up_task``).


def run_normalize(
    audio: Audio, sample_rate: int, options: ClipOptions
) -> tuple[Audio, NormalizeReport, float]:
    """Stage 1: normalised audio, its report, seconds spent."""
    from functions.normalize import normalize

    start = time.perf_counter()
    target, ceiling = options.levels()
    out, report = normalize(audio, sample_rate, target, ceiling)
    report = report.model_copy(update={"preset": options.preset})
    return out, report, time.perf_counter() - start


def run_analyze(
    audio: Audio, sample_rate: int, report: NormalizeReport | None, options: ClipOptions
) -> tuple[AnalysisResult, float]:
    """Stage 2: analysis of the normalised audio, seconds spent."""
    from functions.analysis import analyze

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
    from functions.encode import encode

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
