"""Loudness (BS.1770-4), true peak, the limiter and normalisation, on synthetic signals."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import scipy.signal

from functions.limiter import limit
from functions.loudness import (
    block_powers,
    gain_for_loudness,
    integrated_lufs,
    loudness_range,
    measure_loudness,
)
from functions.normalize import DEFAULT_PRESET, PRESETS, normalize, resolve_levels
from functions.pipeline import ClipOptions
from functions.truepeak import peak_envelope_above, sample_peak, true_peak
from musicfn.errors import InvalidAudioError, InvalidRequestError
from tests.support.signals import sine

SR = 48_000


def _dbtp(audio: np.ndarray) -> float:
    return 20 * np.log10(true_peak(audio))


def _music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Pink-ish noise with drum-like bursts: a high crest factor that needs limiting."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    bed = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal((2, n))) * 0.01
    for start in range(0, n - 6000, SR // 2):
        hit = rng.standard_normal(6000) * np.exp(-np.arange(6000) / 700)
        bed[:, start : start + 6000] += 0.6 * hit
    return bed.astype(np.float32)


@pytest.mark.parametrize("dbfs", [-23.0, -33.0])
def test_ebu_3341_style_sine_measures_its_level(dbfs: float) -> None:
    audio = sine(1000, 20, SR, dbfs)
    stats = measure_loudness(audio, SR)
    assert stats.integrated_lufs == pytest.approx(dbfs, abs=0.1)
    assert stats.sample_peak_dbfs == pytest.approx(dbfs, abs=0.01)
    assert stats.true_peak_dbtp == pytest.approx(dbfs, abs=0.05)
    assert stats.loudness_range_lu == pytest.approx(0.0, abs=0.1)


def test_matches_pyloudnorm_on_noise_and_after_gain() -> None:
    audio = _music_like(12) * np.linspace(0.2, 1.0, 12 * SR, dtype=np.float32)
    meter = pyloudnorm.Meter(SR)
    reference = meter.integrated_loudness(audio.T.astype(np.float64))
    powers = block_powers(audio, SR)
    assert integrated_lufs(powers) == pytest.approx(reference, abs=1e-3)
    # Loudness after a static gain comes from the same block powers, no refiltering.
    scaled = meter.integrated_loudness((audio.T * 0.25).astype(np.float64))
    assert integrated_lufs(powers, 0.25) == pytest.approx(scaled, abs=1e-3)
    lra = meter.loudness_range(audio.T.astype(np.float64))
    assert loudness_range(powers) == pytest.approx(lra, abs=1e-2)


def test_true_peak_finds_inter_sample_peaks() -> None:
    # A sine at fs/4 sampled 45 degrees off its crest: every sample is 0.707 of the peak.
    t = np.arange(SR) / SR
    taper = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)  # no edge ringing from a hard start
    audio = (0.5 * taper * np.sin(2 * np.pi * (SR / 4) * t + np.pi / 4)).astype(np.float32)[None]
    assert sample_peak(audio) == pytest.approx(0.5 / np.sqrt(2), rel=1e-4)
    assert true_peak(audio) == pytest.approx(0.5, rel=0.01)


def test_true_peak_is_exact_for_its_filter_on_dense_and_sparse_signals() -> None:
    from numpy.lib.stride_tricks import sliding_window_view

    from functions import truepeak

    def brute(x: np.ndarray) -> np.ndarray:
        half = truepeak._HALF
        padded = np.pad(x, ((0, 0), (half - 1, half)))
        windows = sliding_window_view(padded, 2 * half, axis=1)
        points = np.abs(windows @ truepeak._WEIGHTS).max(axis=(0, 2))
        return np.maximum(points, np.abs(x).max(axis=0))

    rng = np.random.default_rng(3)
    sparse = _music_like(3)
    dense = sine(997, 3, SR, -3) + 0.01 * rng.standard_normal((2, 3 * SR)).astype(np.float32)
    for audio in (sparse, dense, sparse[:, :37]):
        reference = brute(audio)
        assert true_peak(audio) == pytest.approx(float(reference.max()), rel=1e-6)
        idx, env = peak_envelope_above(audio, 0.3 * float(reference.max()))
        expected = np.flatnonzero(reference > 0.3 * float(reference.max()))
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(env, reference[expected], rtol=1e-6)


def test_short_and_silent_clips_report_reasons() -> None:
    short = measure_loudness(sine(1000, 0.2, SR, -20), SR)
    assert short.integrated_lufs is None
    assert "400 ms" in (short.integrated_unavailable_reason or "")
    assert short.loudness_range_lu is None
    silent = measure_loudness(np.zeros((2, SR * 4), dtype=np.float32), SR)
    assert silent.integrated_lufs is None
    assert "silent" in (silent.integrated_unavailable_reason or "")
    assert silent.sample_peak_dbfs is None
    assert silent.model_dump_json()  # JSON-safe: no -inf anywhere


@pytest.mark.parametrize("target", [-16.0, -23.0, -14.0])
def test_normalize_sine_to_target(target: float) -> None:
    audio = sine(1000, 20, SR, -23)
    out, report = normalize(audio, SR, target, -1.0)
    measured = measure_loudness(out, SR)
    assert measured.integrated_lufs == pytest.approx(target, abs=0.5)
    assert report.after.integrated_lufs == pytest.approx(measured.integrated_lufs, abs=0.01)
    assert report.before.integrated_lufs == pytest.approx(-23.0, abs=0.1)
    assert report.gain_db == pytest.approx(target + 23.0, abs=0.1)
    assert measured.sample_peak_dbfs is not None and measured.sample_peak_dbfs <= -1.0
    assert _dbtp(out) <= -1.0
    assert out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_reach_their_target_under_the_ceiling(preset: str) -> None:
    out, report = normalize(_music_like(10), SR, preset=preset)
    chosen = PRESETS[preset]
    assert report.preset == preset
    assert report.target_lufs == chosen.target_lufs
    assert measure_loudness(out, SR).integrated_lufs == pytest.approx(chosen.target_lufs, abs=0.5)
    assert _dbtp(out) <= chosen.ceiling_dbtp


@pytest.mark.parametrize("target", [-14.0, -10.0])
def test_loud_clip_is_limited_under_the_ceiling_and_near_target(target: float) -> None:
    audio = _music_like(10, seed=1)
    out, report = normalize(audio, SR, target, -1.0)
    assert report.limiter_applied
    assert report.limiter_max_reduction_db > 3.0
    measured = measure_loudness(out, SR)
    assert measured.integrated_lufs == pytest.approx(target, abs=1.0)
    assert measured.true_peak_dbtp is not None and measured.true_peak_dbtp <= -1.0
    assert measured.sample_peak_dbfs is not None and measured.sample_peak_dbfs <= -1.0
    assert report.after.true_peak_dbtp == pytest.approx(measured.true_peak_dbtp, abs=1e-3)
    assert np.isfinite(out).all()


def test_limiter_is_a_smooth_gain_not_a_clipper() -> None:
    audio = _music_like(4, seed=2) * np.float32(4.0)
    ceiling = 10 ** (-1 / 20)
    out, reduction, peak = limit(audio, SR, ceiling)
    assert peak <= ceiling and true_peak(out) <= ceiling
    assert reduction > 6.0
    # The same gain is applied to both channels, and it changes slowly: sample to sample the
    # gain moves by a small fraction of a dB (a clipper or tanh would jump).
    loud = np.abs(audio[0]) > 1e-2
    gain = out[0, loud] / audio[0, loud]
    np.testing.assert_allclose(out[1, loud], audio[1, loud] * gain, rtol=1e-4, atol=1e-6)
    assert np.all(gain <= 1.0 + 1e-5)
    adjacent = np.flatnonzero(loud[:-1] & loud[1:])
    steps_db = np.abs(
        20 * np.log10(out[0, adjacent + 1] / audio[0, adjacent + 1])
        - 20 * np.log10(out[0, adjacent] / audio[0, adjacent])
    )
    assert steps_db.max() < 0.2
    # Peaks are not flattened onto the ceiling the way a clipper flattens them.
    assert np.count_nonzero(np.abs(out) >= 0.999 * np.abs(out).max()) < 20


def test_limiter_leaves_quiet_audio_alone() -> None:
    audio = sine(440, 1, SR, -12)
    out, reduction, _ = limit(audio, SR, 10 ** (-1 / 20))
    assert reduction == 0.0
    np.testing.assert_array_equal(out, audio)


def test_silence_passes_through_unchanged() -> None:
    silence = np.zeros((2, SR * 3), dtype=np.float32)
    out, report = normalize(silence, SR, -16)
    np.testing.assert_array_equal(out, silence)
    assert report.skipped_reason is not None and "silent" in report.skipped_reason
    assert report.gain_db == 0.0 and not report.limiter_applied
    near_silent = sine(1000, 3, SR, -85)
    out, report = normalize(near_silent, SR, -16)
    np.testing.assert_array_equal(out, near_silent)
    assert report.skipped_reason is not None


def test_nan_or_inf_input_is_a_typed_error() -> None:
    audio = sine(1000, 1, SR, -20)
    audio[0, 10] = np.nan
    with pytest.raises(InvalidAudioError):
        normalize(audio, SR)
    audio[0, 10] = np.inf
    with pytest.raises(InvalidAudioError):
        normalize(audio, SR)


def test_bad_levels_and_presets_are_request_errors() -> None:
    audio = sine(1000, 1, SR, -20)
    with pytest.raises(InvalidRequestError):
        normalize(audio, SR, target=3.0)
    with pytest.raises(InvalidRequestError):
        normalize(audio, SR, ceiling=2.0)
    with pytest.raises(InvalidRequestError):
        normalize(audio, SR, preset="loud")


def test_read_only_input_is_not_modified() -> None:
    audio = _music_like(3)
    audio.setflags(write=False)  # as Ray hands arrays out of the object store
    out, report = normalize(audio, SR, -9.0, -1.0)
    assert report.limiter_applied
    assert out is not audio


def _gated_clip(quiet_lufs: float) -> np.ndarray:
    """5 s of tone at about -60 LUFS, then 15 s at ``quiet_lufs`` (under the -70 LUFS gate)."""
    loud = sine(1000, 5, SR, -60.0)
    quiet = sine(1000, 15, SR, quiet_lufs)
    return np.concatenate([loud, quiet], axis=1)


def test_normalise_re_measures_past_the_absolute_gate() -> None:
    """Regression (issue 13): a static gain lifts blocks that were under the -70 LUFS gate over
    it, which changes the gated loudness; the gain must be solved against the gates and the
    output measured again (pyloudnorm: the file used to land 2 LU short)."""
    audio = _gated_clip(-75.0)
    before = measure_loudness(audio, SR).integrated_lufs
    assert before == pytest.approx(-60.0, abs=0.2)  # the quiet part is gated out
    out, report = normalize(audio, SR, -16.0, -1.0)
    measured = pyloudnorm.Meter(SR).integrated_loudness(out.T.astype(np.float64))
    assert measured == pytest.approx(-16.0, abs=0.05)
    assert report.after.integrated_lufs == pytest.approx(measured, abs=0.01)
    assert report.off_target_reason is None and not report.limiter_applied
    # The naive gain (target - before) would have let the quiet part in and missed.
    naive = integrated_lufs(block_powers(audio, SR), 10 ** ((-16.0 - before) / 20))
    assert naive is not None and naive < -16.5


@pytest.mark.parametrize("target", [-40.0, -23.0, -16.0, -10.0])
def test_gain_for_loudness_is_the_smallest_exact_gain(target: float) -> None:
    powers = block_powers(_gated_clip(-72.0), SR)
    gain_db = gain_for_loudness(powers, target)
    assert gain_db is not None
    assert integrated_lufs(powers, 10 ** (gain_db / 20)) == pytest.approx(target, abs=1e-6)
    # No smaller gain reaches the target (scan in 0.05 dB steps below the answer).
    below = np.arange(gain_db - 30.0, gain_db - 0.05, 0.05)
    reached = [integrated_lufs(powers, 10 ** (g / 20)) for g in below]
    assert all(r is None or r < target for r in reached)


def test_every_branch_lands_within_0_05_lu_or_says_why() -> None:
    for audio, target, ceiling in [
        (sine(1000, 10, SR, -30), -16.0, -1.0),  # static gain
        (_music_like(10, seed=3), -12.0, -1.0),  # limiter
        (_music_like(10, seed=4), -20.0, -1.0),  # static, attenuating
    ]:
        out, report = normalize(audio, SR, target, ceiling)
        assert report.off_target_reason is None
        assert measure_loudness(out, SR).integrated_lufs == pytest.approx(target, abs=0.05)
    # A -5 LUFS target under a -20 dBTP ceiling cannot be met: the report says why.
    out, report = normalize(_music_like(6, seed=5), SR, -5.0, -20.0)
    assert report.off_target_reason is not None and "ceiling" in report.off_target_reason
    assert _dbtp(out) <= -20.0


def test_default_levels_come_from_the_default_preset() -> None:
    default = PRESETS[DEFAULT_PRESET]
    assert (default.target_lufs, default.ceiling_dbtp) == (-16.0, -1.0)
    assert resolve_levels(None) == (-16.0, -1.0)
    assert resolve_levels("broadcast", ceiling=-2.0) == (-23.0, -2.0)
    assert ClipOptions().preset == DEFAULT_PRESET
    assert ClipOptions().levels() == (-16.0, -1.0)
    assert ClipOptions(preset=None, target_lufs=-20.0).levels() == (-20.0, -1.0)
    _, report = normalize(sine(1000, 3, SR, -30), SR)
    assert (report.target_lufs, report.ceiling_dbtp) == (-16.0, -1.0)
