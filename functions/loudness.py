"""Loudness per ITU-R BS.1770-4 / EBU R128: integrated LUFS, loudness range, peaks.

The K-weighting filters are pyloudnorm's (its reference coefficients for any rate); the gating
follows ``pyloudnorm.Meter`` block for block but is vectorised over cumulative sums, and the
filtered block powers are kept so loudness after a static gain is exact without refiltering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pyloudnorm
from scipy.signal import sosfilt

from functions.audio import Audio, lin_to_db
from functions.results import LoudnessStats
from functions.truepeak import sample_peak, true_peak

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_S = 0.4  # momentary block, 75 % overlap
SHORT_TERM_S = 3.0  # LRA blocks (EBU Tech 3342), 10 per second
LRA_MIN_DURATION_S = 3.0
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs; others count as 1.0

Float64Array = npt.NDArray[np.float64]
_SUBNORMAL_GUARD = 1e-18


def _alternating(frames: int) -> npt.NDArray[np.float32]:
    signs = np.ones(frames, dtype=np.float32)
    signs[1::2] = -1.0
    return signs


@lru_cache(maxsize=16)
def _k_weighting(sample_rate: int) -> Float64Array:
    """Second-order sections of the BS.1770 K-weighting (shelf, then high-pass)."""
    meter = pyloudnorm.Meter(sample_rate)
    sections = [np.concatenate([stage.b, stage.a]) for stage in meter._filters.values()]
    return np.asarray(sections, dtype=np.float64)


@dataclass(frozen=True)
class BlockPowers:
    """Channel-weighted mean squares of the K-weighted signal per gating block.

    ``momentary``: 400 ms blocks with 75 % overlap (integrated loudness);
    ``short_term``: 3 s blocks every 90 ms over the clip plus 1.5 s of silence (LRA), as
    pyloudnorm computes them. BS.1770 only ever uses the weighted sum over channels
    (sum_i G_i z_ij), so that is what is kept. Scale by ``gain**2`` for the powers of the
    same clip after a static gain.
    """

    momentary: Float64Array
    short_term: Float64Array
    duration_s: float


def block_powers(audio: Audio, sample_rate: int) -> BlockPowers:
    """K-weight ``audio`` and reduce it to gating-block powers (one filtering pass)."""
    channels, frames = audio.shape
    sos = _k_weighting(sample_rate).astype(np.float32)
    # Silence between hits lets the filters' tails decay into float32 subnormals, which are
    # slower than normal floats by two orders of magnitude. A +-1e-18 tone at Nyquist (-360 dB,
    # far below any gate) keeps the recursion in normal range.
    floor = np.float32(_SUBNORMAL_GUARD) * _alternating(frames)
    filtered = sosfilt(sos, audio + floor, axis=1)
    weights = [_CHANNEL_WEIGHTS[i] if i < len(_CHANNEL_WEIGHTS) else 1.0 for i in range(channels)]
    weighted = np.zeros(frames, dtype=np.float64)
    for channel, weight in enumerate(weights):
        weighted += weight * np.square(filtered[channel], dtype=np.float64)
    cumsum = np.zeros(frames + 1)
    np.cumsum(weighted, out=cumsum[1:])
    return BlockPowers(
        momentary=_blocks(cumsum, frames, sample_rate, BLOCK_S, 0.75, 0.0),
        short_term=_blocks(cumsum, frames, sample_rate, SHORT_TERM_S, 0.97, 1.5),
        duration_s=frames / sample_rate,
    )


def _blocks(
    cumsum: Float64Array, frames: int, rate: int, size_s: float, overlap: float, silence_s: float
) -> Float64Array:
    """Block mean squares with pyloudnorm's exact block boundaries."""
    total = frames + int(silence_s * rate)  # appended silence adds no energy, only length
    step = 1.0 - overlap
    duration = total / rate
    if duration < size_s:
        return np.zeros(0)
    count = int(np.round((duration - size_s) / (size_s * step))) + 1
    j = np.arange(count)
    lower = (size_s * (j * step) * rate).astype(np.int64)
    upper = (size_s * (j * step + 1) * rate).astype(np.int64)
    lower = np.minimum(lower, frames)
    upper = np.minimum(upper, frames)
    result: Float64Array = (cumsum[upper] - cumsum[lower]) / (size_s * rate)
    return result


def _block_loudness(powers: Float64Array, gain: float) -> Float64Array:
    with np.errstate(divide="ignore"):
        result: Float64Array = -0.691 + 10.0 * np.log10(powers * (gain * gain))
    return result


def integrated_lufs(powers: BlockPowers, gain: float = 1.0) -> float | None:
    """Gated integrated loudness (LUFS) after a static linear ``gain``; None if nothing passes
    the -70 LUFS absolute gate (silence) or the clip is shorter than one block."""
    z = powers.momentary * (gain * gain)
    if z.shape[0] == 0:
        return None
    loud = _block_loudness(powers.momentary, gain)
    above_abs = loud >= ABSOLUTE_GATE_LUFS
    if not above_abs.any():
        return None
    relative_gate = -0.691 + 10.0 * math.log10(float(z[above_abs].mean())) + RELATIVE_GATE_LU
    gated = (loud > relative_gate) & (loud > ABSOLUTE_GATE_LUFS)
    if not gated.any():
        return None
    return float(-0.691 + 10.0 * math.log10(float(z[gated].mean())))


def loudness_range(powers: BlockPowers, gain: float = 1.0) -> float | None:
    """Loudness range (LU, EBU Tech 3342) after a static gain; None when there is no gated
    short-term block."""
    loud = _block_loudness(powers.short_term, gain)
    loud = loud[loud >= ABSOLUTE_GATE_LUFS]
    if loud.size == 0:
        return None
    integrated = 10.0 * math.log10(float(np.mean(np.power(10.0, loud / 10.0))))
    loud = loud[loud >= integrated - 20.0]
    if loud.size == 0:
        return None
    return float(np.percentile(loud, 95) - np.percentile(loud, 10))


def integrated_with_reason(
    powers: BlockPowers, gain: float = 1.0
) -> tuple[float | None, str | None]:
    """``integrated_lufs`` rounded to 4 decimals, or ``None`` and the reason it is missing."""
    lufs = integrated_lufs(powers, gain)
    if lufs is not None:
        return round(lufs, 4), None
    if powers.momentary.shape[0] == 0:
        return None, "clip shorter than one 400 ms gating block"
    return None, "silent: no block above the -70 LUFS absolute gate"


def loudness_stats(
    powers: BlockPowers, peak: float, tpeak: float, gain: float = 1.0
) -> LoudnessStats:
    """A ``LoudnessStats`` from block powers and the (pre-gain) sample and true peaks."""
    lufs, reason = integrated_with_reason(powers, gain)
    lra = loudness_range(powers, gain) if powers.duration_s >= LRA_MIN_DURATION_S else None
    lra_reason = None
    if powers.duration_s < LRA_MIN_DURATION_S:
        lra_reason = f"clip shorter than {LRA_MIN_DURATION_S:g} s"
    elif lra is None:
        lra_reason = "silent: no short-term block above the gates"
    return LoudnessStats(
        integrated_lufs=lufs,
        integrated_unavailable_reason=reason,
        sample_peak=peak * gain,
        sample_peak_dbfs=lin_to_db(peak * gain),
        true_peak=tpeak * gain,
        true_peak_dbtp=lin_to_db(tpeak * gain),
        loudness_range_lu=_round(lra),
        loudness_range_unavailable_reason=lra_reason,
    )


def measure_loudness(audio: Audio, sample_rate: int) -> LoudnessStats:
    """Integrated loudness, loudness range, sample peak and true peak of ``audio``."""
    return loudness_stats(block_powers(audio, sample_rate), sample_peak(audio), true_peak(audio))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
