"""Decoding and input validation: formats, limits checked from headers, typed errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from functions.audio import check_audio
from functions.decode import DecodeLimits, decode_audio
from musicfn.errors import InvalidAudioError, InvalidRequestError, LimitExceededError
from musicfn.settings import Settings
from tests.support.signals import sine

SR = 32_000


def _encoded(audio: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [
        ("WAV", "PCM_16"),
        ("WAV", "FLOAT"),
        ("FLAC", "PCM_24"),
        ("OGG", "VORBIS"),
        ("MP3", "MPEG_LAYER_III"),
    ],
)
def test_decodes_every_supported_format(fmt: str, subtype: str) -> None:
    audio = sine(440, 1.0, SR, -6)
    decoded = decode_audio(_encoded(audio, fmt=fmt, subtype=subtype))
    assert decoded.audio.dtype == np.float32
    assert decoded.audio.shape == (2, SR)
    assert decoded.audio.flags.c_contiguous
    assert decoded.sample_rate == SR
    assert decoded.info.format == fmt
    assert decoded.info.subtype == subtype
    assert decoded.info.duration_s == pytest.approx(1.0)


def test_decodes_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, sine(440, 0.5, SR, -6).T, SR, subtype="PCM_16")
    decoded = decode_audio(path)
    assert decoded.audio.shape == (2, SR // 2)
    assert decoded.info.format == "FLAC"


def test_too_many_bytes_is_refused_before_decoding(tmp_path: Path) -> None:
    data = _encoded(sine(440, 1.0, SR, -6))
    limits = DecodeLimits(max_bytes=len(data) - 1)
    with pytest.raises(LimitExceededError) as err:
        decode_audio(data, limits)
    assert err.value.code == "too_many_bytes"
    path = tmp_path / "big.wav"
    path.write_bytes(data)
    with pytest.raises(LimitExceededError):
        decode_audio(path, limits)


def test_too_long_is_refused_from_the_header() -> None:
    data = _encoded(sine(440, 2.0, SR, -6))
    with pytest.raises(LimitExceededError) as err:
        decode_audio(data, DecodeLimits(max_duration_s=1.5))
    assert err.value.code == "too_long"
    assert "1.5 s" in err.value.message


def test_limits_come_from_settings() -> None:
    limits = DecodeLimits.from_settings(Settings(max_upload_bytes=4096, max_audio_duration_s=3))
    assert limits.max_bytes == 4096
    assert limits.max_duration_s == 3


def test_channel_and_rate_limits() -> None:
    nine = np.zeros((9, 1000), dtype=np.float32)
    with pytest.raises(LimitExceededError) as err:
        decode_audio(_encoded(nine))
    assert err.value.code == "channels_out_of_range"
    slow = sine(100, 0.5, 4000, -6)
    with pytest.raises(LimitExceededError) as err:
        decode_audio(_encoded(slow, sr=4000))
    assert err.value.code == "sample_rate_out_of_range"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"RIFF", "unreadable_audio"),
        (b"not audio at all" * 20, "unreadable_audio"),
    ],
)
def test_garbage_is_a_typed_error(data: bytes, code: str) -> None:
    with pytest.raises(InvalidAudioError) as err:
        decode_audio(data)
    assert err.value.code == code


def test_header_without_frames_is_empty_audio() -> None:
    with pytest.raises(InvalidAudioError) as err:
        decode_audio(_encoded(np.zeros((2, 0), dtype=np.float32)))
    assert err.value.code == "empty_audio"


def test_truncated_wav_and_flac_are_detected() -> None:
    audio = (np.random.default_rng(0).standard_normal((2, SR)) * 0.1).astype(np.float32)
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16")):
        data = _encoded(audio, fmt=fmt, subtype=subtype)
        with pytest.raises(InvalidAudioError) as err:
            decode_audio(data[: len(data) // 2])
        assert err.value.code in ("truncated_audio", "corrupt_audio")
        assert "truncated" in err.value.message


def test_unsupported_container_is_named() -> None:
    data = _encoded(sine(440, 0.2, SR, -6), fmt="AIFF")
    with pytest.raises(InvalidAudioError) as err:
        decode_audio(data)
    assert err.value.code == "unsupported_format"
    assert "AIFF" in err.value.message


def test_nan_samples_in_a_float_wav_are_rejected() -> None:
    audio = sine(440, 0.2, SR, -6)
    audio[1, 100] = np.nan
    with pytest.raises(InvalidAudioError) as err:
        decode_audio(_encoded(audio, subtype="FLOAT"))
    assert err.value.code == "non_finite_samples"


def test_missing_file_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as err:
        decode_audio(tmp_path / "nope.wav")
    assert err.value.code == "file_not_found"


def test_check_audio_shapes_and_values() -> None:
    mono = np.zeros(100, dtype=np.float64)
    out = check_audio(mono, SR)
    assert out.shape == (1, 100)
    assert out.dtype == np.float32
    with pytest.raises(InvalidAudioError):
        check_audio(np.zeros((2, 2, 2)), SR)
    with pytest.raises(InvalidAudioError):
        check_audio(np.zeros((2, 10), dtype=np.int16), SR)
    with pytest.raises(InvalidAudioError):
        check_audio(np.zeros((2, 0), dtype=np.float32), SR)
    bad = np.zeros((2, 10), dtype=np.float32)
    bad[0, 3] = np.inf
    with pytest.raises(InvalidAudioError) as err:
        check_audio(bad, SR)
    assert err.value.code == "non_finite_samples"
    with pytest.raises(LimitExceededError):
        check_audio(np.zeros((2, 10), dtype=np.float32), 200_000)
