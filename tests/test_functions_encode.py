"""Encoding: every format round-trips; dither, resampling, fades, trim and ranges."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import ValidationError

from functions.decode import decode_audio
from functions.encode import EncodeOptions, encode
from musicfn.errors import InvalidRequestError, UnsupportedError
from tests.support.signals import sine

SR = 32_000
LSB16 = 1 / 32768


def _music(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    tone = sine(220, seconds, SR, -9) + sine(331, seconds, SR, -12)
    return (tone + 0.01 * rng.standard_normal(tone.shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "subtype", "max_error"),
    [
        ("wav", "PCM_16", 1.5 * LSB16),  # half an LSB of rounding + under 1 LSB of TPDF dither
        ("wav", "PCM_24", 0.5 / 2**23 + 1e-9),
        ("wav", "PCM_32", 1e-7),
        ("wav", "FLOAT", 0.0),
        ("flac", "PCM_16", 1.5 * LSB16),
        ("flac", "PCM_24", 0.5 / 2**23 + 1e-9),
        ("ogg", None, None),
        ("mp3", None, None),
    ],
)
def test_every_encoding_round_trips(fmt: str, subtype: str | None, max_error: float | None) -> None:
    audio = _music()
    data, facts = encode(audio, SR, EncodeOptions(format=fmt, subtype=subtype))
    decoded = decode_audio(data)
    assert decoded.sample_rate == SR == facts.sample_rate
    assert decoded.audio.shape == audio.shape
    assert (facts.channels, facts.frames) == audio.shape
    assert facts.bytes == len(data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.format == decoded.info.format
    assert facts.subtype == decoded.info.subtype
    error = float(np.abs(decoded.audio - audio).max())
    if max_error is not None:
        assert error <= max_error
    else:  # lossy: close in level, not sample-exact
        assert np.sqrt(np.mean((decoded.audio - audio) ** 2)) < 0.05
    assert facts.dithered == (subtype == "PCM_16")


def test_pcm16_without_dither_rounds_to_half_an_lsb_and_dither_is_tpdf() -> None:
    audio = _music()
    plain, _ = encode(audio, SR, EncodeOptions(dither=False))
    error = decode_audio(plain).audio - audio
    assert np.abs(error).max() <= 0.5 * LSB16 + 1e-9
    dithered, facts = encode(audio, SR, EncodeOptions())
    noise = (decode_audio(dithered).audio - audio) / LSB16
    assert facts.dithered
    # TPDF dither plus rounding: zero mean, variance 1/6 + 1/12 = 1/4 LSB^2.
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.var()) == pytest.approx(0.25, rel=0.05)


def test_dither_is_deterministic_per_seed() -> None:
    audio = _music(0.5)
    a, fa = encode(audio, SR, EncodeOptions())
    b, fb = encode(audio, SR, EncodeOptions())
    _, fc = encode(audio, SR, EncodeOptions(dither_seed=1))
    assert a == b and fa.sha256 == fb.sha256
    assert fc.sha256 != fa.sha256


def test_full_scale_is_clipped_not_wrapped() -> None:
    audio = np.array([[1.5, -1.5, 1.0, -1.0, 0.0]], dtype=np.float32)
    data, _ = encode(audio, SR, EncodeOptions(dither=False))
    decoded = decode_audio(data).audio[0] * 32768
    np.testing.assert_array_equal(decoded, [32767, -32768, 32767, -32768, 0])


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_resample_on_encode(rate: int) -> None:
    audio = sine(1000, 1.0, SR, -6)
    data, facts = encode(audio, SR, EncodeOptions(sample_rate=rate, subtype="FLOAT"))
    decoded = decode_audio(data)
    assert decoded.sample_rate == rate == facts.sample_rate
    assert decoded.audio.shape == (2, rate)
    middle = decoded.audio[0, rate // 4 : 3 * rate // 4]
    t = np.arange(rate // 4, 3 * rate // 4) / rate
    np.testing.assert_allclose(middle, 10 ** (-6 / 20) * np.sin(2 * np.pi * 1000 * t), atol=1e-3)


def test_range_trim_and_fades() -> None:
    audio = np.zeros((2, 4 * SR), dtype=np.float32)
    audio[:, SR : 3 * SR] = sine(440, 2.0, SR, -6)
    options = EncodeOptions(subtype="FLOAT", trim_silence=True, fade_in_s=0.1, fade_out_s=0.2)
    data, facts = encode(audio, SR, options)
    out = decode_audio(data).audio
    assert facts.frames == pytest.approx(2 * SR, abs=SR // 400)  # silence gone both ends
    assert abs(out[0, 0]) < 1e-3  # fade in starts from nothing
    assert abs(out[0, -1]) < 1e-3
    envelope_mid = np.abs(out[0, SR - 200 : SR + 200]).max()
    assert envelope_mid == pytest.approx(10 ** (-6 / 20), rel=0.01)  # untouched in the middle
    data, facts = encode(audio, SR, EncodeOptions(subtype="FLOAT", start_s=0.5, end_s=1.5))
    assert facts.frames == SR
    np.testing.assert_array_equal(decode_audio(data).audio, audio[:, SR // 2 : 3 * SR // 2])


def test_silent_clip_is_not_trimmed_to_nothing() -> None:
    silence = np.zeros((1, SR), dtype=np.float32)
    _, facts = encode(silence, SR, EncodeOptions(trim_silence=True))
    assert facts.frames == SR


def test_encoding_errors_are_typed() -> None:
    audio = sine(440, 0.5, SR, -6)
    with pytest.raises(UnsupportedError):
        encode(audio, SR, EncodeOptions(format="flac", subtype="PCM_32"))
    with pytest.raises(InvalidRequestError):
        encode(audio, SR, EncodeOptions(format="mp3", subtype="PCM_16"))
    with pytest.raises(InvalidRequestError):
        encode(audio, SR, EncodeOptions(start_s=2.0))
    with pytest.raises(UnsupportedError):
        encode(sine(440, 0.5, 96_000, -6), 96_000, EncodeOptions(format="mp3"))
    with pytest.raises(ValidationError):
        EncodeOptions(sample_rate=22_050)  # type: ignore[arg-type]
