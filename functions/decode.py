"""Decode WAV / FLAC / OGG / MP3 bytes or files into float32 ``(channels, samples)`` arrays.

Limits are checked from the file size and the header before any sample is read, and reading
stops one frame past the duration limit, so an oversized or lying file never fills memory.
soundfile errors are translated into ``InvalidAudioError`` with a code naming the problem.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from functions.audio import Audio, check_format, check_samples
from functions.results import AudioInfo
from musicfn.errors import InvalidAudioError, InvalidRequestError, LimitExceededError

Source = bytes | bytearray | memoryview | str | os.PathLike[str]

# Container names as libsndfile reports them.
SUPPORTED_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "MP3"})

# libsndfile logs "data : <declared> (should be <present>)" for a WAV cut short.
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_SIZE_UNKNOWN = {0, 0xFFFFFFFF}


class _HasLimits(Protocol):
    max_upload_bytes: int
    max_audio_duration_s: float


class DecodeLimits(BaseModel):
    """How much audio ``decode_audio`` accepts (``from_settings`` builds it from ``Settings``)."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_duration_s: float = Field(default=600.0, gt=0)

    @classmethod
    def from_settings(cls, settings: _HasLimits) -> DecodeLimits:
        """The limits configured in ``musicfn.settings.Settings``."""
        return cls(
            max_bytes=settings.max_upload_bytes, max_duration_s=settings.max_audio_duration_s
        )


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded samples plus the facts read from the file."""

    audio: Audio
    sample_rate: int
    info: AudioInfo


def decode_audio(source: Source, limits: DecodeLimits | None = None) -> DecodedAudio:
    """Decode ``source`` (encoded bytes or a file path) into float32 ``(channels, samples)``.

    Raises ``LimitExceededError`` (too many bytes, too long, channels or rate out of range),
    ``InvalidAudioError`` (empty, truncated, corrupt, unsupported format, NaN/Inf or absurdly
    large samples) or ``InvalidRequestError`` (a path that does not exist).
    """
    limits = limits or DecodeLimits()
    name, size = _describe(source)
    if size == 0:
        raise InvalidAudioError(f"{name} is empty (0 bytes)", code="empty_file")
    if size > limits.max_bytes:
        raise LimitExceededError(
            f"{name} is {size} bytes, over the {limits.max_bytes}-byte limit", code="too_many_bytes"
        )
    with _open(source, name) as f:
        fmt, subtype = str(f.format), str(f.subtype)
        if fmt not in SUPPORTED_FORMATS:
            raise InvalidAudioError(
                f"{name} is {fmt} audio; musicfn reads WAV, FLAC, OGG and MP3",
                code="unsupported_format",
            )
        sample_rate, channels = int(f.samplerate), int(f.channels)
        check_format(channels, sample_rate)
        max_frames = int(limits.max_duration_s * sample_rate)
        header_frames = int(f.frames)
        if header_frames > max_frames:
            raise LimitExceededError(
                f"{name} lasts {header_frames / sample_rate:.1f} s, over the "
                f"{limits.max_duration_s:g} s limit",
                code="too_long",
            )
        if header_frames == 0:
            raise InvalidAudioError(f"{name} holds no audio frames", code="empty_audio")
        _check_wav_complete(f, fmt, name)
        data = _read(f, min(header_frames, max_frames) + 1, name)
    frames = data.shape[0]
    if frames > max_frames:
        raise LimitExceededError(
            f"{name} lasts over the {limits.max_duration_s:g} s limit", code="too_long"
        )
    if frames == 0:
        raise InvalidAudioError(f"{name} holds no audio frames", code="empty_audio")
    if frames < header_frames:
        raise InvalidAudioError(
            f"{name} is truncated: header promises {header_frames} frames, found {frames}",
            code="truncated_audio",
        )
    audio: Audio = np.ascontiguousarray(data.T)
    check_samples(audio, name)
    info = AudioInfo(
        format=fmt,
        subtype=subtype,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        duration_s=frames / sample_rate,
    )
    return DecodedAudio(audio=audio, sample_rate=sample_rate, info=info)


def _describe(source: Source) -> tuple[str, int]:
    if isinstance(source, bytes | bytearray | memoryview):
        return "audio data", memoryview(source).nbytes
    path = Path(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidRequestError(f"{path}: no such file", code="file_not_found") from None
    except OSError as exc:
        raise InvalidRequestError(f"{path}: {exc.strerror}", code="file_unreadable") from None
    if not path.is_file():
        raise InvalidRequestError(f"{path} is not a regular file", code="file_unreadable")
    return str(path), size


@contextmanager
def _open(source: Source, name: str) -> Iterator[sf.SoundFile]:
    """``sf.SoundFile`` over bytes or a path (reads the header only), translating open errors."""
    target = (
        io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else source
    )
    try:
        f = sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidAudioError(
            f"{name} is not audio musicfn can read ({_reason(exc)})", code="unreadable_audio"
        ) from None
    try:
        yield f
    finally:
        f.close()


def _read(f: sf.SoundFile, frames: int, name: str) -> np.ndarray:
    try:
        data: np.ndarray = f.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InvalidAudioError(
            f"{name} is corrupt or truncated ({_reason(exc)})", code="corrupt_audio"
        ) from None
    return data


def _check_wav_complete(f: sf.SoundFile, fmt: str, name: str) -> None:
    if not fmt.startswith("WAV"):
        return
    match = _WAV_SHORT_DATA.search(str(f.extra_info))
    if match is None:
        return
    declared, present = int(match.group(1)), int(match.group(2))
    if declared not in _WAV_SIZE_UNKNOWN and declared > present:
        raise InvalidAudioError(
            f"{name} is truncated: its header declares {declared} data bytes, "
            f"{present} are present",
            code="truncated_audio",
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    # libsndfile prefixes messages with "Error opening <object ...>: "; keep the useful tail.
    return text.rsplit(": ", 1)[-1].rstrip(".")
