"""Pitch-class content per frame, from the shared STFT: spectral peaks, tuning, chroma.

Summing a chroma filter bank over the whole clip lets loud passages and strong partials decide
the key. Here every frame counts once and only the partials themselves are placed:

1. Peaks: the local maxima of each frame's magnitude between 30 Hz and 5 kHz, within 40 dB of
   the frame's strongest. A parabola through the log magnitudes of a peak bin and its two
   neighbours puts the partial to a few cents (Hann window), so the 10.8 Hz bins, wider than a
   semitone below 190 Hz, still map to the right pitch: the log-frequency resolution of a
   constant-Q transform without a second transform.
2. Tuning: every peak's offset from the equal-tempered A440 grid, averaged on the circle
   (power-weighted), so a band tuned 30 cents flat still lands on its own pitch classes.
3. Chroma: each peak's power goes to the two nearest pitch classes with a raised-cosine weight
   4/3 semitone wide (as HPCP), then every frame is scaled to its strongest pitch class:
   values are the frame's pitch-class presence, 0..1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from functions.spectrum import N_FFT, Spectrum

FMIN_HZ, FMAX_HZ = 30.0, 5000.0
PEAK_RANGE_DB = 40.0  # peaks this far below the frame's strongest bin are ignored
SILENT_FRAME_DB = 60.0  # frames this far below the clip's strongest are not counted
_WINDOW_SEMITONES = 4.0 / 3.0
_A4_HZ = 440.0
_A_PITCH_CLASS = 9  # C = 0

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Chroma:
    """Per-frame pitch-class presence of a clip.

    ``presence`` is ``(frames, 12)``, C first, each row scaled so its largest value is 1; frames
    without tonal content (silence, nothing within ``SILENT_FRAME_DB`` of the loudest) are left
    out. ``tuning`` is the estimated offset of the clip's tuning from A440, in semitones
    (-0.5..0.5), already compensated in ``presence``.
    """

    presence: Float64Array
    tuning: float
    frame_rate: float

    @property
    def seconds(self) -> float:
        """Duration of the frames that were counted."""
        return float(self.presence.shape[0] / self.frame_rate)


def spectral_peaks(spectrum: Spectrum) -> tuple[IntArray, Float64Array, Float64Array]:
    """``(frame index, frequency Hz, power)`` of every spectral peak, each shaped ``(peaks,)``.

    Frequencies and powers are interpolated between bins (parabola through log magnitudes).
    """
    magnitude = spectrum.magnitude  # (frames, bins)
    rate = spectrum.sample_rate
    lo = max(1, math.floor(FMIN_HZ * N_FFT / rate))
    hi = min(magnitude.shape[1] - 2, math.ceil(FMAX_HZ * N_FFT / rate))
    if hi < lo or magnitude.shape[0] == 0:
        empty = np.empty(0)
        return np.empty(0, dtype=np.intp), empty, empty
    band = magnitude[:, lo - 1 : hi + 2]
    centre = band[:, 1:-1]
    floor = magnitude.max(axis=1, keepdims=True) * np.float32(10.0 ** (-PEAK_RANGE_DB / 20.0))
    is_peak = (centre > band[:, :-2]) & (centre >= band[:, 2:]) & (centre > floor)
    frames, offsets = np.nonzero(is_peak)
    peak = centre[frames, offsets].astype(np.float64)
    # Neighbours may be exact zeros (or underflow): floor them far below the peak.
    tiny = peak * 1e-6
    left = np.log(np.maximum(band[frames, offsets].astype(np.float64), tiny))
    right = np.log(np.maximum(band[frames, offsets + 2].astype(np.float64), tiny))
    middle = np.log(peak)
    curvature = left - 2.0 * middle + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    frequency = (lo + offsets + shift) * (rate / N_FFT)
    power = np.exp(2.0 * (middle - 0.25 * (left - right) * shift))
    return (
        frames.astype(np.intp),
        np.asarray(frequency, dtype=np.float64),
        np.asarray(power, dtype=np.float64),
    )


def estimate_tuning(semitones: Float64Array, power: Float64Array) -> float:
    """Offset (semitones, -0.5..0.5) of partials at ``semitones`` from A440 from the
    equal-tempered grid: the power-weighted circular mean of each partial's distance to its
    nearest semitone; 0.0 when there are no partials. Both arrays are ``(peaks,)``.
    """
    if semitones.size == 0:
        return 0.0
    angle = (2.0 * np.pi) * (semitones - np.rint(semitones))  # small angles: faster cos/sin
    x, y = float(power @ np.cos(angle)), float(power @ np.sin(angle))
    if x == 0.0 and y == 0.0:
        return 0.0
    return math.atan2(y, x) / (2.0 * np.pi)


def frame_chroma(spectrum: Spectrum) -> Chroma:
    """Pitch-class presence per frame (see the module docstring) and the estimated tuning."""
    frames, frequency, power = spectral_peaks(spectrum)
    semitones = 12.0 * np.log2(frequency / _A4_HZ)
    tuning = estimate_tuning(semitones, power)
    count = spectrum.magnitude.shape[0]
    shifted = semitones - tuning + _A_PITCH_CLASS
    lower = np.floor(shifted)
    above = shifted - lower  # 0..1 semitone above the lower neighbour
    # A peak's window (4/3 semitone) reaches the two pitch classes around it and no others;
    # cos^2 is 0 at half the window, so clipping the distance there zeroes the far side.
    half = _WINDOW_SEMITONES / 2
    scale = np.pi / _WINDOW_SEMITONES
    weight_low = np.cos(scale * np.minimum(above, half)) ** 2
    weight_high = np.cos(scale * np.minimum(1.0 - above, half)) ** 2
    base = frames * 12
    low = lower.astype(np.intp) % 12
    index = np.concatenate((base + low, base + (low + 1) % 12))
    weights = np.concatenate((power * weight_low, power * weight_high))
    chroma = np.bincount(index, weights=weights, minlength=count * 12)
    per_frame = chroma.reshape(count, 12)
    strongest = per_frame.max(axis=1)
    loudest = float(strongest.max()) if count else 0.0
    counted = strongest > loudest * 10.0 ** (-SILENT_FRAME_DB / 10.0)
    if loudest <= 0.0 or not math.isfinite(loudest):
        counted[:] = False
    presence = per_frame[counted] / strongest[counted, None]
    return Chroma(presence=presence, tuning=tuning, frame_rate=spectrum.frame_rate)
