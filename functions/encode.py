"""Encode float32 audio to WAV / FLAC / OGG Vorbis / MP3 bytes (soundfile), with the facts.

PCM is quantised here, not by libsndfile: samples are scaled by 2**(bits-1) (the scale the
decoder divides by, so a round trip is exact to half an LSB), TPDF-dithered when going to
16 bits, rounded and clipped. The dither is seeded: the same input gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import numpy.typing as npt
import soundfile as sf

from functions.audio import Audio, check_audio
from functions.options import BIT_DEPTH_SUBTYPES as BIT_DEPTH_SUBTYPES
from functions.options import EncodeOptions as EncodeOptions
from functions.options import FormatName as FormatName
from functions.options import PcmSubtype as PcmSubtype
from functions.results import EncodeFacts
from musicfn.errors import UnsupportedError

_CONTAINER = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}
_MEDIA_TYPE = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
_MP3_MAX_RATE = 48_000


def encode(
    audio: Audio, sample_rate: int, options: EncodeOptions | None = None
) -> tuple[bytes, EncodeFacts]:
    """Apply the edits in ``options`` (range, trim, fades, resample) and encode.

    Returns the encoded bytes and their facts (format, subtype, rate, channels, frames,
    size, sha256).
    """
    from functions.edit import fade, resample, time_range, trim_silence  # scipy: tasks only

    options = options or EncodeOptions()
    subtype = options.resolved_subtype()
    audio = check_audio(audio, sample_rate)
    if options.start_s is not None or options.end_s is not None:
        audio = time_range(audio, sample_rate, options.start_s, options.end_s)
    if options.trim_silence:
        audio = trim_silence(audio, options.trim_threshold_dbfs)
    audio = fade(audio, sample_rate, options.fade_in_s, options.fade_out_s)
    rate = options.sample_rate or sample_rate
    audio = resample(audio, sample_rate, rate)
    if options.format == "mp3" and rate > _MP3_MAX_RATE:
        raise UnsupportedError(
            f"MP3 stores at most {_MP3_MAX_RATE} Hz; resample this {rate} Hz clip first",
            code="unsupported_sample_rate",
        )
    dithered = subtype == "PCM_16" and options.dither
    samples = _quantise(audio.T, subtype, options.dither_seed if dithered else None)
    buffer = io.BytesIO()
    try:
        sf.write(buffer, samples, rate, format=_CONTAINER[options.format], subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise UnsupportedError(
            f"cannot encode {options.format} {subtype} at {rate} Hz: {exc}",
            code="encode_failed",
        ) from None
    data = buffer.getvalue()
    channels, frames = audio.shape
    return data, EncodeFacts(
        format=_CONTAINER[options.format],
        subtype=subtype,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        duration_s=frames / rate,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        dithered=dithered,
        media_type=_MEDIA_TYPE[options.format],
    )


def _quantise(frames: Audio, subtype: str, dither_seed: int | None) -> npt.NDArray[np.generic]:
    """Interleaved ``(frames, channels)`` samples for soundfile from a ``(frames, channels)``
    view: integers for PCM (int32 left-aligned for 24-bit), float32 otherwise."""
    if subtype == "FLOAT":
        return np.ascontiguousarray(frames)
    if subtype not in ("PCM_16", "PCM_24", "PCM_32"):
        # Lossy encoders expect full scale at most.
        return np.clip(frames, -1.0, 1.0, out=np.empty(frames.shape, dtype=np.float32))
    bits = int(subtype.removeprefix("PCM_"))
    scale = float(2 ** (bits - 1))
    # float32 cannot hold 32-bit steps; 16/24-bit values fit its 24-bit mantissa exactly.
    work = np.float64 if bits == 32 else np.float32
    scaled = np.multiply(frames, work(scale), out=np.empty(frames.shape, dtype=work))
    if dither_seed is not None:
        scaled += _tpdf(frames.shape, dither_seed)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -scale, scale - 1, out=scaled)
    if bits == 16:
        return scaled.astype(np.int16)
    if bits == 24:
        return scaled.astype(np.int32) << 8  # libsndfile keeps the top 24 of 32 bits
    return scaled.astype(np.int32)


def _tpdf(shape: tuple[int, ...], seed: int) -> npt.NDArray[np.float32]:
    """Triangular dither in (-1, 1) LSB: the difference of two uniform 8-bit fractions."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes(2 * count), dtype=np.uint8).reshape(2, *shape)
    noise: npt.NDArray[np.float32] = raw[0].astype(np.float32)
    noise -= raw[1]
    noise *= np.float32(1 / 256)
    return noise
