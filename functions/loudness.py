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
IntArray = npt.NDArray[np.int64]
_SUBNORMAL_GUARD = 1e-18


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
    # slower than normal floats by two orders of magnitude (30 s: 0.8 s instead of 20 ms). A
    # 1e-18 offset (-360 dB, far below any gate) keeps every filter state in normal range; the
    # high-pass removes it from the output.
    filtered = sosfilt(sos, audio + np.float32(_SUBNORMAL_GUARD), axis=1)
    weights = np.array(
        [_CHANNEL_WEIGHTS[i] if i < len(_CHANNEL_WEIGHTS) else 1.0 for i in range(channels)],
        dtype=np.float32,
    )
    # One sample's weighted power needs float32's precision only; the sums need float64.
    weighted = np.einsum("i,ij,ij->j", weights, filtered, filtered)
    momentary = _bounds(frames, sample_rate, BLOCK_S, 0.75, 0.0)
    short_term = _bounds(frames, sample_rate, SHORT_TERM_S, 0.97, 1.5)
    # Sum the samples between consecutive block edges once (a running sum over every sample
    # costs three times as much), then read each block off the running sum of those pieces.
    edges = np.unique(np.concatenate([[0, frames], *momentary, *short_term]))
    prefix = np.zeros(edges.shape[0])
    np.cumsum(np.add.reduceat(weighted, edges[:-1], dtype=np.float64), out=prefix[1:])

    def mean_squares(bounds: tuple[IntArray, IntArray], size_s: float) -> Float64Array:
        lower, upper = (prefix[np.searchsorted(edges, b)] for b in bounds)
        result: Float64Array = (upper - lower) / (size_s * sample_rate)
        return result

    return BlockPowers(
        momentary=mean_squares(momentary, BLOCK_S),
        short_term=mean_squares(short_term, SHORT_TERM_S),
        duration_s=frames / sample_rate,
    )


def _bounds(
    frames: int, rate: int, size_s: float, overlap: float, silence_s: float
) -> tuple[IntArray, IntArray]:
    """``(lower, upper)`` sample edges of the gating blocks: pyloudnorm's exact boundaries,
    clipped to the clip (appended silence adds no energy, only length)."""
    total = frames + int(silence_s * rate)
    step = 1.0 - overlap
    duration = total / rate
    if duration < size_s:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    count = int(np.round((duration - size_s) / (size_s * step))) + 1
    j = np.arange(count)
    lower = np.minimum((size_s * (j * step) * rate).astype(np.int64), frames)
    upper = np.minimum((size_s * (j * step + 1) * rate).astype(np.int64), frames)
    return lower, upper


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


def gain_for_loudness(powers: BlockPowers, target: float) -> float | None:
    """The smallest static gain (dB) after which the integrated loudness is ``target`` LUFS;
    None when no block has any energy.

    Only the absolute gate depends on the gain: as it rises, quieter blocks pass -70 LUFS one
    by one (each can lower the gated mean, so loudness steps down), and between two such steps
    loudness rises dB for dB. Loudness therefore takes every value above about -70 LUFS on some
    step; this finds the first step that holds ``target``. A plain ``target - loudness`` lifts
    blocks over the gate and misses whenever the clip has any between -70 LUFS and the target.
    """
    z = np.sort(powers.momentary[powers.momentary > 0])[::-1]  # loudest first
    if z.size == 0:
        return None
    count = np.arange(1, z.size + 1)
    sums = np.cumsum(z)
    # Among the k loudest blocks, those above their mean less 10 LU pass the relative gate;
    # sorted, that is a prefix of them.
    gate = sums / count * 10.0 ** (RELATIVE_GATE_LU / 10.0)
    passed = np.minimum(z.size - np.searchsorted(z[::-1], gate, side="right"), count)
    gated = -0.691 + 10.0 * np.log10(sums[passed - 1] / passed)
    # The k loudest pass the absolute gate from the gain that lifts block k to it.
    start = ABSOLUTE_GATE_LUFS - (-0.691 + 10.0 * np.log10(z))
    end = np.append(start[1:], np.inf)
    gains = target - gated
    fits = np.flatnonzero((gains >= start) & (gains < end))
    return float(gains[fits[0]]) if fits.size else None


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
