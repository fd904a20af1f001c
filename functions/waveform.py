"""Waveform peaks (min/max per bucket per channel) in BBC audiowaveform's JSON format."""

from __future__ import annotations

from typing import Literal

import numpy as np

from functions.audio import Audio
from functions.options import DEFAULT_BUCKETS as DEFAULT_BUCKETS
from functions.options import MAX_BUCKETS
from functions.results import WaveformPeaks
from musicfn.errors import InvalidRequestError


def waveform_peaks(
    audio: Audio, sample_rate: int, buckets: int = DEFAULT_BUCKETS, bits: Literal[8, 16] = 8
) -> WaveformPeaks:
    """Min and max of each channel over ``buckets`` equal runs of samples.

    ``samples_per_pixel`` is ``ceil(frames / buckets)``, so ``length`` can come out a little
    under ``buckets``. Values are scaled to signed ``bits``-bit integers as audiowaveform does;
    ``data`` holds, per bucket, ``min, max`` for channel 0, then channel 1, and so on.
    """
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidRequestError(
            f"waveform buckets must be 1 to {MAX_BUCKETS}, got {buckets}", code="bad_buckets"
        )
    if bits not in (8, 16):
        raise InvalidRequestError(f"waveform bits must be 8 or 16, got {bits}", code="bad_bits")
    channels, frames = audio.shape
    per_bucket = max(1, -(-frames // buckets))
    length = -(-frames // per_bucket)
    full = frames // per_bucket
    runs = audio[:, : full * per_bucket].reshape(channels, full, per_bucket)
    lows, highs = runs.min(axis=2), runs.max(axis=2)
    if full < length:  # the last, shorter bucket
        tail = audio[:, full * per_bucket :]
        lows = np.concatenate([lows, tail.min(axis=1, keepdims=True)], axis=1)
        highs = np.concatenate([highs, tail.max(axis=1, keepdims=True)], axis=1)
    scale = float(2 ** (bits - 1))
    lows = np.clip(np.floor(lows * scale), -scale, scale - 1)
    highs = np.clip(np.ceil(highs * scale), -scale, scale - 1)
    # (length, channels, 2) flattened: bucket-major, then channel, then min/max.
    data = np.stack([lows.T, highs.T], axis=2).astype(np.int32).ravel()
    return WaveformPeaks(
        channels=channels,
        sample_rate=sample_rate,
        samples_per_pixel=per_bucket,
        bits=bits,
        length=length,
        data=data.tolist(),
    )
