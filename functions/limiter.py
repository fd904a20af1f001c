"""A look-ahead true-peak limiter, vectorised (no per-sample Python loop).

The gain reduction needed at each sample (in dB, from the 4x oversampled envelope) is turned
into a smooth gain curve in three array passes:

1. attack: a forward maximum over the look-ahead window followed by a backward moving average
   over the same window. Every averaged window contains the sample, so the curve is at least the
   reduction needed there, and it ramps in linearly over the look-ahead instead of jumping.
2. release: an exponential decay from every peak, ``r[n] = max_k a[k] * exp(-(n - k) / T)``,
   computed as a running maximum in the log domain:
   ``log r[n] = max_k (log a[k] + k / T) - n / T``.
3. gain = 10 ** (-r / 20), applied to all channels alike (linked), so the stereo image holds.

Because the gain moves slowly, the limited signal's true peak lands on the target; it is then
measured, and the pass repeated with a lower target (then, if ever needed, a tiny static trim)
until it is at or below the ceiling.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from functions.audio import Audio
from functions.truepeak import SUPPORT, peak_envelope_above, true_peak
from musicfn.errors import InvalidRequestError

DEFAULT_LOOKAHEAD_S = 0.005
DEFAULT_RELEASE_S = 0.1
_SAFETY_DB = 0.02  # aim this far under the ceiling so float rounding cannot cross it
_MAX_PASSES = 4


def limit(
    audio: Audio,
    sample_rate: int,
    ceiling: float,
    *,
    lookahead_s: float = DEFAULT_LOOKAHEAD_S,
    release_s: float = DEFAULT_RELEASE_S,
) -> tuple[Audio, float, float]:
    """Limit ``audio`` so its true peak (and so its sample peak) is at most ``ceiling`` (linear).

    Returns ``(limited, max_reduction_db, true_peak_after)``. Audio already under the ceiling
    comes back as is with a reduction of 0.
    """
    if ceiling <= 0:
        raise InvalidRequestError(
            f"limiter ceiling must be positive, got {ceiling}", code="bad_ceiling"
        )
    target = ceiling * 10.0 ** (-_SAFETY_DB / 20.0)
    lookahead = max(1, round(lookahead_s * sample_rate))
    release = max(1.0, release_s * sample_rate)
    out, reduction = audio, 0.0
    peak = true_peak(audio)
    for _ in range(_MAX_PASSES):
        if peak <= ceiling:
            return out, reduction, peak
        curve = _reduction_curve(audio, target, lookahead, release)
        if curve is None:  # nothing above target; only rounding put the peak over
            break
        out = (audio * _gain(curve)).astype(np.float32, copy=False)
        reduction = float(curve.max())
        peak = true_peak(out)
        # Overshoot comes from the gain changing between oversampled points: aim lower.
        target *= min(ceiling / peak, 1.0) * 10.0 ** (-_SAFETY_DB / 20.0)
    if peak > ceiling:
        trim = ceiling / peak * (1.0 - 1e-6)
        out = (out * np.float32(trim)).astype(np.float32, copy=False)
        reduction = max(reduction, 0.0) - 20.0 * math.log10(trim)
        peak = true_peak(out)
    return out, reduction, peak


def _reduction_curve(
    audio: Audio, target: float, lookahead: int, release: float
) -> npt.NDArray[np.float64] | None:
    """Smoothed gain reduction in dB per sample (>= the reduction each sample needs)."""
    idx, env = peak_envelope_above(audio, target)
    if idx.size == 0:
        return None
    needed = np.zeros(audio.shape[1], dtype=np.float64)
    need = 20.0 * np.log10(env.astype(np.float64) / target)
    # The envelope at m includes the points between m and m + 1: both samples must be reduced.
    # Each interpolated point mixes the 16 samples around it: hold the reduction over that
    # support so the gain is flat across it and the peak lands where it was aimed.
    needed[idx] = need
    needed = maximum_filter1d(needed, size=2 * SUPPORT + 1, mode="constant")
    held = maximum_filter1d(needed, size=lookahead, origin=-(lookahead // 2), mode="constant")
    attack = uniform_filter1d(held, size=lookahead, origin=(lookahead - 1) // 2, mode="nearest")
    # "nearest" holds the first value before the clip: a peak at the very start is met by a
    # gain that is already down. uniform_filter1d rounds: keep the guarantee exact.
    attack = np.maximum(attack, needed)
    return _release(attack, release)


def _release(curve: npt.NDArray[np.float64], release: float) -> npt.NDArray[np.float64]:
    """Exponential decay with time constant ``release`` samples from every value of ``curve``."""
    positions = np.arange(curve.shape[0], dtype=np.float64) / release
    with np.errstate(divide="ignore"):
        logs = np.log(curve) + positions
    decayed: npt.NDArray[np.float64] = np.exp(np.maximum.accumulate(logs) - positions)
    return decayed


def _gain(reduction_db: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    gain: npt.NDArray[np.float32] = np.power(10.0, reduction_db / -20.0).astype(np.float32)
    return gain
