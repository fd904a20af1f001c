"""Extreme input through decode -> normalise -> analyse -> encode: a typed error or a valid
result, never another exception (property-based, with hypothesis)."""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra.numpy import arrays

from functions.analysis import analyze
from functions.audio import MAX_CHANNELS, MAX_SAMPLE_MAGNITUDE
from functions.decode import decode_audio
from functions.encode import encode
from functions.normalize import TOLERANCE_LU, normalize
from functions.results import AnalysisResult, NormalizeReport
from musicfn.errors import InvalidAudioError

# Hypothesis keeps its example database and caches here, not in the work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "musicfn-hypothesis")

RATES = (8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000)
MAX_SAMPLES = 120_000  # over all channels: keeps one example well under a second


def _float_wav(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _finite_numbers(value: Any) -> None:
    """Every number in a result's JSON form is finite."""
    if isinstance(value, dict):
        for item in value.values():
            _finite_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _finite_numbers(item)
    elif isinstance(value, float):
        assert math.isfinite(value)


def _chain(audio: np.ndarray, rate: int) -> tuple[NormalizeReport, AnalysisResult] | None:
    """Run the whole chain; None when it refused the audio with ``InvalidAudioError``."""
    try:
        decoded = decode_audio(_float_wav(audio, rate))
        out, report = normalize(decoded.audio, decoded.sample_rate)
        analysis = analyze(out, decoded.sample_rate, loudness=report.after)
        data, facts = encode(out, decoded.sample_rate)
    except InvalidAudioError as exc:
        assert exc.code and exc.message
        return None
    assert out.shape == decoded.audio.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    _finite_numbers(report.model_dump())
    _finite_numbers(analysis.model_dump())
    assert facts.frames == out.shape[1] and len(data) == facts.bytes
    if report.skipped_reason is None:
        assert report.after.true_peak <= 10 ** (report.ceiling_dbtp / 20)
        after = report.after.integrated_lufs
        on_target = after is not None and abs(after - report.target_lufs) <= TOLERANCE_LU
        assert on_target or report.off_target_reason
    return report, analysis


@st.composite
def clips(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Audio of any shape the format allows, built from values or generators that stress
    the chain: raw float32 patterns (NaN, inf, huge, subnormal), DC, silence, noise or tones
    scaled over the whole float32 range."""
    rate = draw(st.sampled_from(RATES))
    channels = draw(st.integers(1, MAX_CHANNELS))
    longest = MAX_SAMPLES // channels  # at 8-22 kHz, long enough for the tempo path
    frames = draw(st.one_of(st.integers(1, 4096), st.integers(1, longest), st.just(longest)))
    kind = draw(st.sampled_from(["values", "dc", "noise", "tone"]))
    if kind == "values":
        element = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
        audio = draw(arrays(np.float32, (channels, frames), elements=element, fill=element))
        return audio, rate
    scale = draw(st.sampled_from([0.0, 1e-45, 1e-38, 1e-20, 1e-6, 0.5, 8.0, 1e5, 1e19, 3e38]))
    if kind == "dc":
        return np.full((channels, frames), scale, dtype=np.float32), rate
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "noise":
        base = rng.standard_normal((channels, frames))
    else:
        t = np.arange(frames) / rate
        freq = draw(st.floats(20.0, rate / 2))
        base = np.tile(np.sin(2 * np.pi * freq * t), (channels, 1))
    with np.errstate(over="ignore"):
        return (base * scale).astype(np.float32), rate


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(clips())
def test_any_audio_is_a_typed_error_or_a_valid_result(clip: tuple[np.ndarray, int]) -> None:
    audio, rate = clip
    result = _chain(audio, rate)
    if not np.isfinite(audio).all() or np.abs(audio).max() > MAX_SAMPLE_MAGNITUDE:
        assert result is None


def _tone(rate: int, seconds: float, channels: int = 2, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    tone = level * np.sin(2 * np.pi * 440.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2.0 * t))
    return np.tile(tone, (channels, 1)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "audio", "rate", "refused"),
    [
        ("corrupt float wav (1.8e19)", np.full((2, 4800), 1.8e19, np.float32), 48_000, True),
        ("nan", np.full((1, 4800), np.nan, np.float32), 48_000, True),
        ("inf", np.full((1, 4800), -np.inf, np.float32), 48_000, True),
        ("all zeros", np.zeros((2, 96_000), np.float32), 48_000, False),
        ("one sample", np.full((1, 1), 0.5, np.float32), 48_000, False),
        ("dc", np.full((2, 96_000), 0.5, np.float32), 48_000, False),
        ("subnormal", np.full((2, 96_000), 1e-42, np.float32), 48_000, False),
        ("eight channels", _tone(48_000, 2.0, channels=8), 48_000, False),
        ("8 kHz", _tone(8_000, 5.0), 8_000, False),
        ("192 kHz", _tone(192_000, 1.0), 192_000, False),
        ("+100 dBFS float", _tone(48_000, 1.0) * np.float32(1e5), 48_000, False),
    ],
)
def test_named_extremes(name: str, audio: np.ndarray, rate: int, refused: bool) -> None:
    result = _chain(audio, rate)
    assert (result is None) == refused, name
    if result is not None and name in ("eight channels", "8 kHz", "192 kHz", "+100 dBFS float"):
        report, analysis = result
        assert report.after.integrated_lufs == pytest.approx(report.target_lufs, abs=0.05)
        assert analysis.channels == audio.shape[0] and analysis.sample_rate == rate
