"""Typed results of the audio functions: JSON-ready pydantic models for sidecars and the CLI.

Levels that do not exist (the dB level of digital silence, the loudness of a clip too short to
gate) are ``None`` with a ``*_unavailable_reason`` beside them, never ``-inf`` or an exception.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AudioInfo(_Result):
    """Facts about decoded audio."""

    format: str = Field(description="container, e.g. WAV, FLAC, OGG, MP3")
    subtype: str = Field(description="sample encoding, e.g. PCM_16, VORBIS")
    sample_rate: int
    channels: int
    frames: int
    duration_s: float


class LoudnessStats(_Result):
    """ITU-R BS.1770-4 / EBU R128 measurements of one clip."""

    integrated_lufs: float | None
    integrated_unavailable_reason: str | None = None
    sample_peak: float = Field(ge=0, description="largest absolute sample, linear")
    sample_peak_dbfs: float | None
    true_peak: float = Field(ge=0, description="4x oversampled peak, linear")
    true_peak_dbtp: float | None
    loudness_range_lu: float | None
    loudness_range_unavailable_reason: str | None = None


class NormalizeReport(_Result):
    """What ``normalize`` measured and did."""

    preset: str | None
    target_lufs: float
    ceiling_dbtp: float
    before: LoudnessStats
    after: LoudnessStats
    gain_db: float = Field(description="static gain applied before the limiter")
    limiter_applied: bool
    limiter_max_reduction_db: float = Field(ge=0)
    skipped_reason: str | None = Field(
        default=None, description="why the audio passed through unchanged, if it did"
    )
    off_target_reason: str | None = Field(
        default=None,
        description="why the measured output is more than 0.05 LU from the target, if it is",
    )


class TempoResult(_Result):
    """Global tempo estimate."""

    bpm: float = Field(gt=0)
    confidence: float = Field(ge=0, le=1, description="pulse clarity: 0 none, 1 metronome")
    beat_count: int = Field(ge=0)


class KeyResult(_Result):
    """Global key estimate: Temperley's probabilistic key model on per-frame pitch-class
    presence (functions.key)."""

    tonic: str = Field(description="pitch class, sharps: C, C#, D, ... B")
    mode: Literal["major", "minor"]
    label: str = Field(description='e.g. "A minor"')
    confidence: float = Field(
        ge=0,
        le=1,
        description="posterior probability of this key among the 24, one observation per "
        "second of tonal audio: about 0.04 (1/24) for no evidence, near 1 for a clear key",
    )
    correlation: float = Field(description="profile correlation of the chosen key")
    runner_up: str = Field(description="the second most probable key")
    runner_up_confidence: float = Field(ge=0, le=1, description="posterior of the runner-up")
    tuning_cents: float = Field(
        default=0.0, description="estimated offset of the clip's tuning from A440, in cents"
    )


class WaveformPeaks(_Result):
    """Min/max peaks per bucket per channel in BBC audiowaveform's JSON format (version 2).

    ``data`` interleaves, for each bucket, ``min, max`` of channel 0, then channel 1, ...
    scaled to signed integers of ``bits`` bits.
    """

    version: Literal[2] = 2
    channels: int
    sample_rate: int
    samples_per_pixel: int
    bits: Literal[8, 16]
    length: int = Field(description="number of buckets")
    data: list[int]


class SpectralStats(_Result):
    """Means over frames of the classic spectral shape features."""

    centroid_hz: float
    bandwidth_hz: float
    rolloff_hz: float = Field(description="85% energy roll-off")
    zero_crossing_rate: float = Field(description="crossings per sample")


class AnalysisResult(_Result):
    """Everything ``analyze`` computes in its single pass."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    peak: float
    peak_dbfs: float | None
    rms: float
    rms_dbfs: float | None
    crest_factor_db: float | None
    dynamic_range_db: float | None = Field(
        description="spread of short-term RMS: 95th minus 10th percentile of 50 ms frames"
    )
    level_unavailable_reason: str | None = None
    integrated_lufs: float | None
    integrated_lufs_unavailable_reason: str | None = None
    spectral: SpectralStats | None
    spectral_unavailable_reason: str | None = None
    tempo: TempoResult | None
    tempo_unavailable_reason: str | None = None
    key: KeyResult | None
    key_unavailable_reason: str | None = None
    waveform: WaveformPeaks
    analysis_sample_rate: int = Field(description="rate of the shared resample used by features")


class EncodeFacts(_Result):
    """Facts about encoded bytes."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    bytes: int
    sha256: str
    dithered: bool
    media_type: str


class StageTimings(_Result):
    """Seconds spent per stage (inside the worker for Ray tasks)."""

    normalize_s: float
    analyze_s: float
    encode_s: float
    total_s: float


class ProcessedClip(_Result):
    """One clip after normalise -> analyse -> encode; ``audio`` is left out of JSON dumps."""

    audio: bytes = Field(exclude=True, repr=False)
    loudness: NormalizeReport
    analysis: AnalysisResult
    encoding: EncodeFacts
    timings: StageTimings

    def sidecar(self) -> dict[str, object]:
        """The JSON-ready part of the result (everything but the encoded bytes)."""
        return self.model_dump(mode="json")
