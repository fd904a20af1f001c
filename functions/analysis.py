"""One-pass analysis: levels, loudness, spectral shape, tempo, key and waveform peaks.

The clip is mixed to mono, resampled once (to 22.05 kHz) and transformed once (STFT); the
spectral features, the onset envelope (tempo, beats) and the chroma (key) all read that one
spectrogram. Levels, loudness and waveform peaks use the original channels and rate.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from functions.audio import Audio, check_audio, lin_to_db, to_mono
from functions.key import key_result
from functions.loudness import block_powers, integrated_with_reason
from functions.results import AnalysisResult, LoudnessStats, SpectralStats
from functions.spectrum import Spectrum, compute_spectrum
from functions.tempo import tempo_result
from functions.truepeak import sample_peak
from functions.waveform import DEFAULT_BUCKETS, waveform_peaks

_DR_FRAME_S = 0.05
_ROLLOFF = 0.85
_ROLLOFF_BLOCK = 32
_SILENT = "silent: every sample is zero"
_FLOAT32_SQUARE_FLOOR = 1e-18  # its square, 1e-36, is near float32's smallest normal


def analyze(
    audio: Audio,
    sample_rate: int,
    *,
    buckets: int = DEFAULT_BUCKETS,
    bits: Literal[8, 16] = 8,
    loudness: LoudnessStats | None = None,
) -> AnalysisResult:
    """Analyse a clip in one pass; fields that cannot be computed are None with a reason.

    ``loudness``, when given, must describe this exact audio (e.g. ``NormalizeReport.after``);
    its integrated loudness is reused instead of measured again.
    """
    audio = check_audio(audio, sample_rate)
    channels, frames = audio.shape
    fields: dict[str, object] = {
        "duration_s": frames / sample_rate,
        "sample_rate": sample_rate,
        "channels": channels,
        "frames": frames,
        "waveform": waveform_peaks(audio, sample_rate, buckets, bits),
    }
    fields.update(_levels(audio, sample_rate))
    if loudness is not None:
        fields["integrated_lufs"] = loudness.integrated_lufs
        fields["integrated_lufs_unavailable_reason"] = loudness.integrated_unavailable_reason
    else:
        lufs, reason = integrated_with_reason(block_powers(audio, sample_rate))
        fields["integrated_lufs"] = lufs
        fields["integrated_lufs_unavailable_reason"] = reason

    spectrum = compute_spectrum(to_mono(audio), sample_rate)
    fields["analysis_sample_rate"] = spectrum.sample_rate
    if fields["peak"] == 0.0:
        fields.update(
            spectral=None,
            spectral_unavailable_reason=_SILENT,
            tempo=None,
            tempo_unavailable_reason=_SILENT,
            key=None,
            key_unavailable_reason=_SILENT,
        )
        return AnalysisResult.model_validate(fields)
    fields["spectral"] = _spectral(spectrum)
    if fields["spectral"] is None:
        fields["spectral_unavailable_reason"] = "no energy in the analysed band"
    tempo = tempo_result(spectrum)
    fields["tempo"], fields["tempo_unavailable_reason"] = (
        (None, tempo) if isinstance(tempo, str) else (tempo, None)
    )
    key = key_result(spectrum)
    fields["key"], fields["key_unavailable_reason"] = (
        (None, key) if isinstance(key, str) else (key, None)
    )
    return AnalysisResult.model_validate(fields)


def _levels(audio: Audio, sample_rate: int) -> dict[str, object]:
    """Peak, RMS, crest factor and short-term dynamic range."""
    peak = sample_peak(audio)
    if peak < _FLOAT32_SQUARE_FLOOR:
        # Squares this small are subnormal (or zero) in float32: square in float64.
        power = np.square(audio, dtype=np.float64).mean(axis=0)
    else:
        power = np.einsum("ij,ij->j", audio, audio) / np.float32(audio.shape[0])
    rms = math.sqrt(float(power.mean(dtype=np.float64)))
    if peak == 0.0:
        return {
            "peak": 0.0,
            "peak_dbfs": None,
            "rms": 0.0,
            "rms_dbfs": None,
            "crest_factor_db": None,
            "dynamic_range_db": None,
            "level_unavailable_reason": _SILENT,
        }
    size = max(1, round(_DR_FRAME_S * sample_rate))
    count = power.shape[0] // size
    dynamic_range = None
    if count >= 2:
        frame_power = power[: count * size].reshape(count, size).mean(axis=1, dtype=np.float64)
        frame_power = frame_power[frame_power > 0]
        if frame_power.size >= 2:
            frame_db = 10.0 * np.log10(frame_power)
            dynamic_range = round(
                float(np.percentile(frame_db, 95) - np.percentile(frame_db, 10)), 4
            )
    return {
        "peak": peak,
        "peak_dbfs": lin_to_db(peak),
        "rms": rms,
        "rms_dbfs": lin_to_db(rms),
        "crest_factor_db": round(20.0 * math.log10(peak / rms), 4),
        "dynamic_range_db": dynamic_range,
        "level_unavailable_reason": None
        if dynamic_range is not None
        else f"clip shorter than {2 * _DR_FRAME_S:g} s: no dynamic range",
    }


def _spectral(spectrum: Spectrum) -> SpectralStats | None:
    """Frame means of centroid, bandwidth and 85 % roll-off (magnitude-weighted, as librosa)."""
    mag = spectrum.magnitude  # (frames, bins)
    freqs = spectrum.frequencies
    totals = mag.sum(axis=1)
    voiced = totals > 1e-10 * max(float(totals.max()), 1e-30)
    if not voiced.any():
        return None
    if not voiced.all():
        mag, totals = mag[voiced], totals[voiced]
    first = (mag @ freqs) / totals
    second = (mag @ (freqs * freqs)) / totals
    bandwidth = np.sqrt(np.maximum(second - first * first, 0.0))
    rolloff_bin = _rolloff_bins(mag, _ROLLOFF)
    signal = spectrum.signal
    crossings = np.count_nonzero(np.signbit(signal[1:]) != np.signbit(signal[:-1]))
    return SpectralStats(
        centroid_hz=round(float(first.mean(dtype=np.float64)), 3),
        bandwidth_hz=round(float(bandwidth.mean(dtype=np.float64)), 3),
        rolloff_hz=round(float(freqs[rolloff_bin].mean(dtype=np.float64)), 3),
        zero_crossing_rate=round(crossings / max(1, signal.shape[0] - 1), 6),
    )


def _rolloff_bins(mag: npt.NDArray[np.float32], fraction: float) -> npt.NDArray[np.intp]:
    """Per frame of ``mag`` (frames, bins), the first bin where the running sum of magnitude
    reaches ``fraction`` of the frame's total.

    A running sum over every bin costs more than the rest of the spectral features together:
    sum blocks of 32 bins, find the block, and run the sum inside that block only.
    """
    frames, bins = mag.shape
    blocks = -(-bins // _ROLLOFF_BLOCK)
    padded = np.zeros((frames, blocks, _ROLLOFF_BLOCK), dtype=mag.dtype)
    padded.reshape(frames, -1)[:, :bins] = mag
    running = np.cumsum(padded.sum(axis=2), axis=1)
    threshold = fraction * running[:, -1]
    block = np.argmax(running >= threshold[:, None], axis=1)
    rows = np.arange(frames)
    before = np.where(block > 0, running[rows, np.maximum(block - 1, 0)], 0.0)
    inside = before[:, None] + np.cumsum(padded[rows, block], axis=1)
    reached = inside >= threshold[:, None]
    # Summing in another order can leave the block's end a hair under the threshold.
    within = np.where(reached.any(axis=1), np.argmax(reached, axis=1), _ROLLOFF_BLOCK - 1)
    result: npt.NDArray[np.intp] = np.minimum(block * _ROLLOFF_BLOCK + within, bins - 1)
    return result
