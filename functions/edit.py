"""Edits applied before encoding: time range, silence trim, fades, resampling."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly

from functions.audio import Audio
from musicfn.errors import InvalidRequestError

RESAMPLE_RATES = (44_100, 48_000)


def time_range(audio: Audio, sample_rate: int, start_s: float | None, end_s: float | None) -> Audio:
    """The part of ``audio`` from ``start_s`` to ``end_s`` (seconds; None = the clip's edge)."""
    frames = audio.shape[1]
    start = 0 if start_s is None else round(start_s * sample_rate)
    end = frames if end_s is None else round(end_s * sample_rate)
    if start < 0 or (end_s is not None and end_s < 0):
        raise InvalidRequestError("time range start and end must be >= 0", code="bad_range")
    if start >= min(end, frames):
        raise InvalidRequestError(
            f"time range {start_s}..{end_s} s selects nothing from a "
            f"{frames / sample_rate:.3f} s clip",
            code="empty_range",
        )
    return audio[:, start : min(end, frames)]


def trim_silence(audio: Audio, threshold_dbfs: float = -60.0) -> Audio:
    """Drop leading and trailing samples quieter than ``threshold_dbfs`` in every channel.

    A clip that is silent throughout is returned as is (trimming it to nothing would leave no
    audio to encode).
    """
    threshold = 10.0 ** (threshold_dbfs / 20.0)
    loud = np.flatnonzero(np.abs(audio).max(axis=0) > threshold)
    if loud.size == 0:
        return audio
    return audio[:, int(loud[0]) : int(loud[-1]) + 1]


def fade(audio: Audio, sample_rate: int, fade_in_s: float = 0.0, fade_out_s: float = 0.0) -> Audio:
    """Equal-power (sine-shaped) fade in and out; returns a new array when fading."""
    if fade_in_s < 0 or fade_out_s < 0:
        raise InvalidRequestError("fade lengths must be >= 0", code="bad_fade")
    frames = audio.shape[1]
    fade_in = min(frames, round(fade_in_s * sample_rate))
    fade_out = min(frames, round(fade_out_s * sample_rate))
    if fade_in == 0 and fade_out == 0:
        return audio
    gain = np.ones(frames, dtype=np.float32)
    if fade_in:
        gain[:fade_in] *= np.sin(0.5 * np.pi * np.arange(fade_in) / fade_in)
    if fade_out:
        gain[frames - fade_out :] *= np.sin(
            0.5 * np.pi * np.arange(fade_out - 1, -1, -1) / fade_out
        )
    out: Audio = audio * gain
    return out


def resample(audio: Audio, sample_rate: int, target_rate: int) -> Audio:
    """Polyphase resampling (Kaiser-windowed FIR) to ``target_rate``."""
    if target_rate == sample_rate:
        return audio
    if target_rate not in RESAMPLE_RATES:
        raise InvalidRequestError(
            f"resampling is to {' or '.join(map(str, RESAMPLE_RATES))} Hz, not {target_rate}",
            code="bad_sample_rate",
        )
    g = math.gcd(sample_rate, target_rate)
    out = resample_poly(audio, target_rate // g, sample_rate // g, axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)
