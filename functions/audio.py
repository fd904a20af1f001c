"""Shared audio conventions: the (channels, samples) float32 layout, input checks, dB helpers.

Every public function in ``functions/`` takes audio shaped ``(channels, samples)`` and returns
new arrays: inputs may be read-only (Ray hands out zero-copy views of the object store).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from musicfn.errors import InvalidAudioError, LimitExceededError

Audio = npt.NDArray[np.float32]

MIN_CHANNELS = 1
MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000


def check_audio(audio: npt.ArrayLike, sample_rate: int) -> Audio:
    """Validate ``audio`` and return it as a C-contiguous float32 ``(channels, samples)`` array.

    A 1-D array is taken as mono. Raises ``InvalidAudioError`` for a wrong shape, no samples or
    NaN/Inf samples, and ``LimitExceededError`` for a channel count or rate outside the limits.
    The input is never modified; it is returned as is when it already has the right layout.
    """
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise InvalidAudioError(
            f"audio must be shaped (channels, samples), got {arr.ndim} dimensions",
            code="bad_shape",
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidAudioError(
            f"audio must hold floating-point samples, got {arr.dtype}", code="bad_dtype"
        )
    channels, frames = arr.shape
    check_format(channels, sample_rate)
    if frames == 0:
        raise InvalidAudioError("audio has no samples", code="empty_audio")
    out: Audio = np.ascontiguousarray(arr, dtype=np.float32)
    # A NaN or Inf anywhere makes the float64 sum non-finite; finite float32 samples cannot
    # overflow it. One pass, no temporary mask.
    if not math.isfinite(float(np.sum(out, dtype=np.float64))):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InvalidAudioError(
            f"audio contains {bad} NaN or infinite samples", code="non_finite_samples"
        )
    return out


def check_format(channels: int, sample_rate: int) -> None:
    """Raise ``LimitExceededError`` unless channels and sample rate are within the limits."""
    if not MIN_CHANNELS <= channels <= MAX_CHANNELS:
        raise LimitExceededError(
            f"{channels} channels: musicfn handles {MIN_CHANNELS} to {MAX_CHANNELS}",
            code="channels_out_of_range",
        )
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise LimitExceededError(
            f"sample rate {sample_rate} Hz: musicfn handles {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz",
            code="sample_rate_out_of_range",
        )


def to_mono(audio: Audio) -> Audio:
    """Average the channels of a ``(channels, samples)`` array into one 1-D float32 array."""
    mono: Audio = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0, dtype=np.float32)
    return mono


def lin_to_db(value: float) -> float | None:
    """Amplitude ratio to dB; ``None`` for zero (digital silence has no finite level)."""
    if value <= 0.0 or not math.isfinite(value):
        return None
    return round(20.0 * math.log10(value), 4)


def db_to_lin(db: float) -> float:
    """dB to amplitude ratio."""
    return float(10.0 ** (db / 20.0))
