"""The one resample and the one STFT that every analysis feature shares."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import scipy.fft
import soxr  # librosa dependency; no stubs
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window

from functions.audio import Audio

ANALYSIS_RATE = 22_050
N_FFT = 2048
HOP = 512

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Spectrum:
    """Mono analysis signal and its magnitude STFT (centred frames, Hann window).

    ``magnitude`` and ``power`` are shaped ``(frames, 1 + N_FFT // 2)``: frames-major, the
    transpose of librosa's layout (librosa filter banks apply as ``power @ basis.T``).
    """

    signal: Float32Array
    sample_rate: int
    magnitude: Float32Array
    power: Float32Array

    @property
    def frame_rate(self) -> float:
        """STFT frames per second."""
        return self.sample_rate / HOP

    @property
    def frequencies(self) -> Float32Array:
        """Centre frequency (Hz) of each STFT bin."""
        return _frequencies(self.sample_rate)


def analysis_signal(mono: Float32Array, sample_rate: int) -> tuple[Float32Array, int]:
    """``mono`` resampled to ``ANALYSIS_RATE`` (never upsampled), and its rate."""
    if sample_rate <= ANALYSIS_RATE:
        return mono, sample_rate
    # soxr's high quality mode, as librosa's default resampler, called directly: importing
    # librosa's audio module would cost a second in every fresh worker.
    resampled = soxr.resample(mono, sample_rate, ANALYSIS_RATE, quality="HQ")
    return np.ascontiguousarray(resampled, dtype=np.float32), ANALYSIS_RATE


def compute_spectrum(mono: Audio | Float32Array, sample_rate: int) -> Spectrum:
    """Resample a mono signal once and take its STFT once."""
    signal, rate = analysis_signal(np.asarray(mono, dtype=np.float32), sample_rate)
    padded = np.pad(signal, N_FFT // 2)
    if padded.shape[0] < N_FFT:
        padded = np.pad(padded, (0, N_FFT - padded.shape[0]))
    frames = sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = scipy.fft.rfft(frames * _window(), axis=1)
    magnitude = np.abs(spectrum).astype(np.float32, copy=False)
    return Spectrum(
        signal=signal, sample_rate=rate, magnitude=magnitude, power=np.square(magnitude)
    )


@lru_cache(maxsize=1)
def _window() -> Float32Array:
    window: Float32Array = get_window("hann", N_FFT, fftbins=True).astype(np.float32)
    return window


@lru_cache(maxsize=8)
def _frequencies(sample_rate: int) -> Float32Array:
    freqs: Float32Array = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate).astype(np.float32)
    return freqs
