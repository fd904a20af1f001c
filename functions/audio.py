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
# Float audio may exceed full scale, but by +120 dBFS the numbers are not sound any more (a
# corrupt float WAV reads as 1e19): their squares and spectra would overflow float32.
MAX_SAMPLE_MAGNITUDE = 2.0**20


def check_audio(audio: npt.ArrayLike, sample_rate: int) -> Audio:
    """Validate ``audio`` and return it as a C-contiguous float32 ``(channels, samples)`` array.

    A 1-D array is taken as mono. Raises ``InvalidAudioError`` for a wrong shape, no samples or
    NaN/Inf samples or samples beyond ``MAX_SAMPLE_MAGNITUDE``, and ``LimitExceededError`` for a
    channel count or rate outside the limits.
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
    check_samples(out)
    return out


def check_samples(audio: Audio, name: str = "audio") -> None:
    """Raise ``InvalidAudioError`` if ``audio`` holds NaN, infinite or absurdly large samples
    (over ``MAX_SAMPLE_MAGNITUDE``); ``name`` says what the message is about."""
    if audio.size == 0:
        return
    # max and min propagate NaN and reach +-inf: two fast reductions, no temporary mask.
    high, low = float(audio.max()), float(audio.min())
    if not (math.isfinite(high) and math.isfinite(low)):
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise InvalidAudioError(
            f"{name} contains {bad} NaN or infinite samples", code="non_finite_samples"
        )
    peak = max(abs(high), abs(low))
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise InvalidAudioError(
            f"{name} has samples of magnitude {peak:.3g} ({20 * math.log10(peak):+.0f} dBFS); "
            f"musicfn accepts up to {MAX_SAMPLE_MAGNITUDE:g} (+120 dBFS)",
            code="samples_out_of_range",
        )


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
    if audio.shape[0] == 1:
        single: Audio = audio[0]
        return single
    mono: Audio = np.add.reduce(audio, axis=0)
    mono *= np.float32(1.0 / audio.shape[0])
    return mono


def lin_to_db(value: float) -> float | None:
    """Amplitude ratio to dB; ``None`` for zero (digital silence has no finite level)."""
    if value <= 0.0 or not math.isfinite(value):
        return None
    return round(20.0 * math.log10(value), 4)


def db_to_lin(db: float) -> float:
    """dB to amplitude ratio."""
    return float(10.0 ** (db / 20.0))
