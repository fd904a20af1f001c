"""One-pass analysis: levels, spectrum, tempo, key, waveform peaks."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from functions.analysis import analyze
from functions.key import key_from_chroma
from functions.waveform import waveform_peaks
from musicfn.errors import InvalidAudioError, InvalidRequestError
from tests.support.signals import (
    PITCH_CLASSES,
    cadence,
    chord_progression,
    pad,
    pattern,
    sine,
    triad,
)

SR = 32_000


def test_levels_and_spectrum_of_a_sine() -> None:
    result = analyze(sine(1000, 5, SR, -6), SR)
    assert result.duration_s == pytest.approx(5.0)
    assert (result.sample_rate, result.channels, result.frames) == (SR, 2, 5 * SR)
    assert result.peak_dbfs == pytest.approx(-6.0, abs=0.01)
    assert result.rms_dbfs == pytest.approx(-6.0 - 3.0103, abs=0.01)
    assert result.crest_factor_db == pytest.approx(3.0103, abs=0.01)
    assert result.dynamic_range_db == pytest.approx(0.0, abs=0.1)
    assert result.integrated_lufs == pytest.approx(-6.0, abs=0.2)
    assert result.spectral is not None
    assert result.spectral.centroid_hz == pytest.approx(1000, rel=0.03)
    assert result.spectral.rolloff_hz == pytest.approx(1000, rel=0.05)
    assert result.spectral.zero_crossing_rate == pytest.approx(2000 / 22050, rel=0.01)
    assert result.analysis_sample_rate == 22050


def test_analysis_is_json_ready() -> None:
    result = analyze(pattern(120, 6, SR, drums=True), SR)
    data = json.loads(result.model_dump_json())
    assert data["tempo"]["bpm"] > 0
    assert data["waveform"]["version"] == 2


CLICK_TEMPOS = [70, 85, 100, 128, 150, 172, 180]
DRUM_TEMPOS = [72, 96, 110, 140, 165]


@pytest.mark.parametrize("bpm", CLICK_TEMPOS)
def test_click_track_tempo_within_4_percent(bpm: float) -> None:
    result = analyze(pattern(bpm, 20, SR, drums=False), SR)
    assert result.tempo is not None
    assert result.tempo.bpm == pytest.approx(bpm, rel=0.04)
    assert result.tempo.confidence > 0.6
    assert result.tempo.beat_count == pytest.approx(20 * bpm / 60, abs=3)


def test_drum_pattern_tempo_within_4_percent_or_octave() -> None:
    exact, octave = [], []
    for bpm in DRUM_TEMPOS:
        result = analyze(pattern(bpm, 20, SR, drums=True, seed=bpm), SR)
        assert result.tempo is not None
        ratio = result.tempo.bpm / bpm
        if abs(ratio - 1) <= 0.04:
            exact.append(bpm)
        elif min(abs(ratio - 2), abs(ratio - 0.5) * 2) <= 0.08:  # 4 % of the doubled/halved
            octave.append((bpm, result.tempo.bpm))
        else:
            pytest.fail(f"{bpm} BPM drums measured {result.tempo.bpm} BPM")
        assert result.tempo.confidence > 0.5
    if octave:  # reported separately, as the issue asks; not a failure
        warnings.warn(f"drum tempo octave errors (true, measured): {octave}", stacklevel=1)
    assert len(exact) >= len(DRUM_TEMPOS) // 2


def test_metronome_free_pad_gets_low_tempo_confidence() -> None:
    beats = analyze(pattern(120, 30, SR, drums=True), SR)
    assert beats.tempo is not None
    for seed in range(2):
        result = analyze(pad(30, SR, seed=seed), SR)
        if result.tempo is None:
            assert result.tempo_unavailable_reason
            continue
        assert result.tempo.confidence < 0.2
        assert result.tempo.confidence < beats.tempo.confidence / 3


KEYS = [
    (0, False),
    (2, True),
    (4, False),
    (5, True),
    (7, False),
    (9, True),
    (10, False),
    (11, True),
    (1, False),
    (6, True),
]


@pytest.mark.parametrize(("tonic", "minor"), KEYS)
def test_triads_and_cadences_give_the_key(tonic: int, minor: bool) -> None:
    expected = f"{PITCH_CLASSES[tonic]} {'minor' if minor else 'major'}"
    for base in (48, 60):
        root = base + tonic
        for audio in (
            chord_progression([triad(root, minor)], 4, SR),
            chord_progression(cadence(root, minor), 1.5, SR),
        ):
            result = analyze(audio, SR)
            assert result.key is not None
            assert result.key.label == expected, (base, result.key)
            assert result.key.mode == ("minor" if minor else "major")
            assert result.key.confidence > 0.0


def test_key_needs_tonal_content() -> None:
    assert isinstance(key_from_chroma(np.zeros(12)), str)
    assert isinstance(key_from_chroma(np.ones(12)), str)
    noise = np.random.default_rng(0).standard_normal((2, SR * 5)).astype(np.float32) * 0.1
    result = analyze(noise, SR)
    assert result.key is None or result.key.confidence < 0.5


def test_silence_gives_nulls_with_reasons() -> None:
    result = analyze(np.zeros((2, SR * 5), dtype=np.float32), SR)
    assert result.peak == 0.0 and result.peak_dbfs is None and result.rms_dbfs is None
    assert result.level_unavailable_reason
    assert result.integrated_lufs is None and result.integrated_lufs_unavailable_reason
    assert result.tempo is None and result.tempo_unavailable_reason
    assert result.key is None and result.key_unavailable_reason
    assert result.spectral is None and result.spectral_unavailable_reason
    assert set(result.waveform.data) == {0}


def test_short_clip_has_no_tempo_but_everything_else() -> None:
    result = analyze(sine(440, 1.0, SR, -12), SR)
    assert result.tempo is None
    assert "shorter" in (result.tempo_unavailable_reason or "")
    assert result.key is not None
    assert result.integrated_lufs is not None


def test_bad_input_is_a_typed_error() -> None:
    audio = sine(440, 1.0, SR, -12)
    audio[0, 0] = np.nan
    with pytest.raises(InvalidAudioError):
        analyze(audio, SR)


def test_waveform_peaks_follow_audiowaveform_format() -> None:
    audio = np.zeros((2, 1005), dtype=np.float32)
    audio[0, 10] = 0.5  # bucket 1, channel 0 max
    audio[1, 1004] = -1.0  # last (short) bucket, channel 1 min
    peaks = waveform_peaks(audio, 8000, buckets=100, bits=16)
    data = peaks.model_dump()
    assert set(data) == {
        "version",
        "channels",
        "sample_rate",
        "samples_per_pixel",
        "bits",
        "length",
        "data",
    }
    assert (peaks.version, peaks.channels, peaks.sample_rate, peaks.bits) == (2, 2, 8000, 16)
    assert peaks.samples_per_pixel == 11
    assert peaks.length == 92  # ceil(1005 / 11)
    assert len(peaks.data) == peaks.length * peaks.channels * 2
    grid = np.array(peaks.data).reshape(peaks.length, peaks.channels, 2)
    assert grid[0, 0].tolist() == [0, 16384]
    assert grid[-1, 1].tolist() == [-32768, 0]
    eight = waveform_peaks(audio, 8000, buckets=100, bits=8)
    assert np.array(eight.data).reshape(-1, 2, 2)[0, 0].tolist() == [0, 64]
    with pytest.raises(InvalidRequestError):
        waveform_peaks(audio, 8000, buckets=0)


def test_read_only_input_works() -> None:
    audio = pattern(100, 6, SR, drums=False)
    audio.setflags(write=False)
    assert analyze(audio, SR).tempo is not None


@pytest.mark.parametrize("sr", [22_050, 16_000, 11_025])
def test_filter_banks_match_librosa(sr: int) -> None:
    import librosa

    from functions import filterbanks

    np.testing.assert_allclose(
        filterbanks.mel_filterbank(sr, 2048), librosa.filters.mel(sr=sr, n_fft=2048), atol=1e-7
    )
    power = np.random.default_rng(sr).random((40, 128)).astype(np.float32) ** 6
    np.testing.assert_allclose(
        filterbanks.power_to_db(power, float(power.max())),
        librosa.power_to_db(power, ref=float(power.max())),
        atol=1e-4,
    )


def test_key_survives_a_detuned_band_and_reports_the_tuning() -> None:
    """A cadence played 35 cents sharp: each partial sits between two equal-tempered pitch
    classes until the tuning estimate moves the grid."""
    cents = 35.0
    chords = [[m + cents / 100 for m in chord] for chord in cadence(62, True)]  # D minor
    result = analyze(chord_progression(chords, 1.5, SR), SR)  # type: ignore[arg-type]
    assert result.key is not None
    assert result.key.label == "D minor"
    assert result.key.tuning_cents == pytest.approx(cents, abs=5.0)


def test_key_confidence_is_a_posterior() -> None:
    """Confidence and the runner-up's share are posterior probabilities over the 24 keys: more
    evidence (a longer clip of the same cadence) means more confidence, and evidence for no key
    in particular means little."""
    short = analyze(chord_progression(cadence(60, False), 0.5, SR), SR).key
    long = analyze(chord_progression(cadence(60, False) * 4, 1.5, SR), SR).key
    assert short is not None and long is not None
    assert short.label == long.label == "C major"
    assert 0 < short.runner_up_confidence < short.confidence < long.confidence <= 1
    assert short.confidence + short.runner_up_confidence <= 1
    # Every pitch class equally present: no key at all; random presence: no key stands out.
    assert isinstance(key_from_chroma(np.eye(12)[np.arange(240) % 12], seconds=10.0), str)
    noise = key_from_chroma(np.random.default_rng(0).random((430, 12)), seconds=10.0)
    assert not isinstance(noise, str)
    assert noise.confidence < 0.25
