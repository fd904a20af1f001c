"""Render waveform peaks as a PNG with numpy and zlib only (no plotting library needed)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from functions.results import WaveformPeaks
from musicfn.errors import InvalidRequestError

_BACKGROUND = (255, 255, 255)
_WAVE = (31, 119, 180)
_AXIS = (200, 200, 200)
_SEPARATOR = (90, 90, 90)


def render_png(waveforms: Sequence[WaveformPeaks], channel_height: int = 120) -> bytes:
    """One panel per channel of each waveform, stacked top to bottom, as PNG bytes.

    Columns are buckets, so the image is as wide as the longest waveform.
    """
    if not waveforms:
        raise InvalidRequestError("no waveform to draw", code="nothing_to_draw")
    width = max(w.length for w in waveforms)
    panels = []
    for index, waveform in enumerate(waveforms):
        if index:
            panels.append(np.full((2, width, 3), _SEPARATOR, dtype=np.uint8))
        data = np.asarray(waveform.data, dtype=np.float64).reshape(
            waveform.length, waveform.channels, 2
        )
        scale = float(2 ** (waveform.bits - 1))
        for channel in range(waveform.channels):
            panels.append(
                _panel(
                    data[:, channel, 0] / scale, data[:, channel, 1] / scale, width, channel_height
                )
            )
    return encode_png(np.concatenate(panels, axis=0))


def _panel(
    lows: npt.NDArray[np.float64], highs: npt.NDArray[np.float64], width: int, height: int
) -> npt.NDArray[np.uint8]:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = _BACKGROUND
    middle = (height - 1) / 2
    image[round(middle)] = _AXIS
    # Row 0 is +1.0, the last row -1.0.
    top = np.clip(np.floor(middle - highs * middle), 0, height - 1)
    bottom = np.clip(np.ceil(middle - lows * middle), 0, height - 1)
    rows = np.arange(height)[:, None]
    columns = lows.shape[0]
    mask = (rows >= top[None, :]) & (rows <= bottom[None, :])
    image[:, :columns][mask] = _WAVE
    return image


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit RGB PNG of an ``(height, width, 3)`` array."""
    height, width, _ = rgb.shape
    raw = np.concatenate(
        [np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, -1)], axis=1
    )  # filter type 0 ("None") before each row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
