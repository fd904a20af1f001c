"""Mel filter bank and dB conversion, numerically as librosa's (numpy only).

librosa's versions live in modules whose import pulls in numba and costs about two seconds in
every fresh process; these few formulas do not need it. tests/test_functions_analysis.py checks
them against librosa.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: Float64Array) -> Float64Array:
    """Slaney mel scale (librosa's default, ``htk=False``)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    with np.errstate(divide="ignore"):
        logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-30) / _MIN_LOG_HZ) / _LOGSTEP
    result: Float64Array = np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)
    return result


def mel_to_hz(mels: Float64Array) -> Float64Array:
    """Inverse of ``hz_to_mel``."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = _F_SP * mels
    logarithmic = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    result: Float64Array = np.where(mels >= _MIN_LOG_MEL, logarithmic, linear)
    return result


def mel_frequencies(n_mels: int, fmax: float, fmin: float = 0.0) -> Float64Array:
    """``n_mels`` frequencies evenly spaced on the mel scale from ``fmin`` to ``fmax``."""
    bounds = hz_to_mel(np.array([fmin, fmax]))
    return mel_to_hz(np.linspace(bounds[0], bounds[1], n_mels))


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128) -> Float32Array:
    """``(n_mels, 1 + n_fft // 2)`` triangular filters, Slaney area normalisation."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = mel_frequencies(n_mels + 2, fmax=sample_rate / 2.0)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    result: Float32Array = weights.astype(np.float32)
    return result


def power_to_db(
    power: Float32Array, ref: float, amin: float = 1e-10, top_db: float = 80.0
) -> Float32Array:
    """``10 log10(power / ref)``, floored at ``amin`` and at ``top_db`` below the maximum."""
    db = 10.0 * np.log10(np.maximum(amin, power)) - 10.0 * np.log10(max(amin, ref))
    result: Float32Array = np.maximum(db, db.max() - top_db).astype(np.float32, copy=False)
    return result
