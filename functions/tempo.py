"""Tempo, pulse clarity and beat count from the shared spectrum.

The onset envelope is log-mel spectral flux (as librosa's) in four equally weighted sub-bands,
computed from our STFT. The tempo is the lag of the strongest autocorrelation peak of the
detrended envelope under a log-normal prior around 120 BPM, moved to a faster metrical level
when the pulse there is about as periodic (see ``_prefer_faster``), then refined to a fraction
of a frame using the peaks at 2x-4x that lag. The height of that peak (1 for a perfectly
periodic pulse, near 0 for no pulse) is the confidence.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from functions.filterbanks import mel_filterbank, mel_frequencies, power_to_db
from functions.results import TempoResult
from functions.spectrum import N_FFT, Spectrum

MIN_BPM, MAX_BPM = 40.0, 240.0
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0
MIN_DURATION_S = 4.0
_DETREND_S = 1.5
_N_MELS = 128
_BAND_EDGES_HZ = (0.0, 200.0, 800.0, 3000.0)  # lower edges of the onset sub-bands
_SMOOTH_FRAMES = 1.0
# (division, share of the prior-weighted peak the faster level needs), tried in this order.
# Binary subdivisions (eighth notes) are in most music without being the beat: halving needs
# a near-full peak. Music without a ternary pulse has a negative autocorrelation a third of the
# way to its beat (every binary clip and pattern we measured), so a clearly positive peak there,
# half the main one, means the bar or half-bar was found and the beat is three times faster.
_SUBDIVISIONS = ((2, 0.85), (3, 0.5))
_STRONG_ONSET = 0.2  # share of the peak onset strength that marks music, not silence

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


@lru_cache(maxsize=4)
def _mel_bands(sample_rate: int) -> tuple[npt.NDArray[np.bool_], ...]:
    """Masks over the mel bins for each of the onset sub-bands."""
    centres = mel_frequencies(_N_MELS, fmax=sample_rate / 2)
    edges = (*_BAND_EDGES_HZ, np.inf)
    masks = [(centres >= lo) & (centres < hi) for lo, hi in itertools.pairwise(edges)]
    return tuple(m for m in masks if m.any())


def onset_envelope(spectrum: Spectrum) -> Float32Array:
    """Onset strength per frame: positive change of the log-mel power (librosa's spectral
    flux), averaged within four sub-bands and summed with each band scaled to unit variance.

    A plain mean over mel bins lets broadband hits (snare, hats) drown the kick, and a backbeat
    then reads as half the tempo; weighting the bands equally keeps every beat in the pulse.
    """
    if spectrum.power.shape[0] < 2:
        return np.zeros(spectrum.power.shape[0], dtype=np.float32)
    mel = spectrum.power @ mel_filterbank(spectrum.sample_rate, N_FFT, _N_MELS).T  # (frames, mels)
    log_mel = power_to_db(mel, ref=float(mel.max()) if mel.max() > 0 else 1.0)
    flux = np.maximum(0.0, np.diff(log_mel, axis=0))
    envelope = np.zeros(flux.shape[0] + 1, dtype=np.float32)
    for mask in _mel_bands(spectrum.sample_rate):
        band = flux[:, mask].mean(axis=1)
        spread = float(band.std())
        if spread > 0:
            # diff drops one frame; the change belongs to the later frame, as in librosa.
            envelope[1:] += band / spread
    return envelope


def estimate_tempo(envelope: Float32Array, frame_rate: float) -> tuple[float, float] | str:
    """``(bpm, confidence)`` from an onset envelope, or the reason there is no estimate."""
    frames = envelope.shape[0]
    if frames / frame_rate < MIN_DURATION_S:
        return f"clip shorter than {MIN_DURATION_S:g} s"
    detrended = envelope - uniform_filter1d(envelope, size=int(_DETREND_S * frame_rate))
    # Onsets are one frame wide; a beat period is rarely a whole number of frames. Widen them
    # so the autocorrelation does not favour periods that happen to fall on whole frames.
    detrended = gaussian_filter1d(detrended, _SMOOTH_FRAMES)
    detrended = detrended - detrended.mean()
    energy = float(np.dot(detrended, detrended))
    if energy <= 1e-12 * frames:
        return "no onsets: the spectrum never changes"
    ac = _autocorrelation(detrended)
    lags = np.arange(ac.shape[0], dtype=np.float64)
    with np.errstate(divide="ignore"):
        bpm = 60.0 * frame_rate / lags
    usable = (bpm >= MIN_BPM) & (bpm <= MAX_BPM)
    prior = np.exp(-0.5 * (np.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    score = np.where(usable, np.maximum(ac, 0.0) * prior, -np.inf)
    lag = int(np.argmax(score))
    if not np.isfinite(score[lag]) or ac[lag] <= 0:
        return "no periodic pulse in the onset envelope"
    lag = _prefer_faster(score, lag)
    period = _refine_period(ac, lag)
    confidence = float(np.clip(ac[lag], 0.0, 1.0))
    return 60.0 * frame_rate / period, confidence


def tempo_result(spectrum: Spectrum) -> TempoResult | str:
    """Tempo, confidence and beat count for the shared spectrum, or why not."""
    envelope = onset_envelope(spectrum)
    estimate = estimate_tempo(envelope, spectrum.frame_rate)
    if isinstance(estimate, str):
        return estimate
    bpm, confidence = estimate
    beats = beat_grid(envelope, 60.0 * spectrum.frame_rate / bpm)
    return TempoResult(
        bpm=round(bpm, 2), confidence=round(confidence, 4), beat_count=int(beats.size)
    )


def beat_grid(envelope: Float32Array, period: float) -> Float64Array:
    """Beat positions (frames): the grid at ``period`` whose phase collects the most onset
    strength, over the span from the first to the last strong onset.

    A fixed grid rather than a tracker that follows tempo drift: the clips here are short,
    generated or produced at one tempo, and the grid needs no per-frame loop.
    """
    smooth = gaussian_filter1d(envelope.astype(np.float64), _SMOOTH_FRAMES)
    count = int(smooth.shape[0] / period) + 1
    phases = np.arange(max(1, int(np.ceil(period))), dtype=np.float64)
    positions = phases[:, None] + period * np.arange(count)[None, :]
    inside = positions <= smooth.shape[0] - 1
    strength = np.where(inside, smooth[np.minimum(positions, smooth.shape[0] - 1).astype(int)], 0)
    grid = positions[int(np.argmax(strength.sum(axis=1)))]
    strong = np.flatnonzero(smooth >= _STRONG_ONSET * float(smooth.max()))
    if strong.size == 0:
        return np.empty(0)
    first, last = strong[0] - period / 2, strong[-1] + period / 2
    selected: Float64Array = grid[(grid >= first) & (grid <= last)]
    return selected


def _autocorrelation(x: Float32Array) -> Float64Array:
    """Unbiased autocorrelation normalised to 1 at lag 0, up to half the length."""
    n = x.shape[0]
    size = scipy.fft.next_fast_len(2 * n)
    spectrum = scipy.fft.rfft(x.astype(np.float64), size)
    ac = scipy.fft.irfft(spectrum * np.conj(spectrum), size)[: n // 2]
    ac = ac * (n / (n - np.arange(ac.shape[0])))
    result: Float64Array = ac / ac[0]
    return result


def _prefer_faster(score: Float64Array, lag: int) -> int:
    """Divide the lag while the prior-weighted peak at ``lag / d`` is strong enough (see
    ``_SUBDIVISIONS``).

    A steady pulse correlates at every multiple of its period, and near 85 / 170 BPM the prior
    is no help; the beat is the shortest period with a peak as strong as its level requires.
    """
    moved = True
    while moved:
        moved = False
        for division, ratio in _SUBDIVISIONS:
            if lag < 2 * division:
                continue
            lo = max(1, lag // division - 1)
            hi = -(-lag // division) + 1
            candidate = lo + int(np.argmax(score[lo : hi + 1]))
            if np.isfinite(score[candidate]) and score[candidate] >= ratio * score[lag]:
                lag, moved = candidate, True
                break
    return lag


def _refine_period(ac: Float64Array, lag: int) -> float:
    """Sub-frame beat period: parabolic peaks near k * lag, k = 1..4, divided by k.

    Longer multiples pin the period down k times more finely; use the longest one found. The
    result stays within half a frame of ``lag``: refining must not jump to another peak when
    the multiples of a short or loose pulse do not line up.
    """
    best = _parabolic_peak(ac, lag, 1)
    for k in (2, 3, 4):
        centre = round(best * k)
        if centre + k + 1 >= ac.shape[0]:
            break
        refined = _parabolic_peak(ac, centre, max(1, k // 2)) / k
        if abs(refined - lag) > 0.5:
            break
        best = refined
    return best


def _parabolic_peak(ac: Float64Array, centre: int, radius: int) -> float:
    lo, hi = max(1, centre - radius), min(ac.shape[0] - 2, centre + radius)
    if hi < lo:
        return float(centre)
    i = lo + int(np.argmax(ac[lo : hi + 1]))
    a, b, c = ac[i - 1], ac[i], ac[i + 1]
    denom = a - 2 * b + c
    offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float(i + np.clip(offset, -0.5, 0.5))
