"""What the audio functions can be asked to do: loudness presets, encoding and clip options.

Pure pydantic, no numpy / scipy / soundfile: the Serve replicas (Ingress, JobRunner,
EventPoller) and the CLI validate requests with these models without importing the signal
processing, which only runs in the Ray audio tasks. ``functions.normalize``, ``.encode``,
``.waveform`` and ``.pipeline`` re-export them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from musicfn.errors import InvalidRequestError, UnsupportedError

PresetName = Literal["streaming", "podcast", "broadcast"]
DEFAULT_PRESET: PresetName = "podcast"

FormatName = Literal["wav", "flac", "ogg", "mp3"]
PcmSubtype = Literal["PCM_16", "PCM_24", "PCM_32", "FLOAT"]

LOSSY_SUBTYPES: dict[str, str] = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
PCM_SUBTYPES: dict[str, tuple[str, ...]] = {
    "wav": ("PCM_16", "PCM_24", "PCM_32", "FLOAT"),
    "flac": ("PCM_16", "PCM_24"),
}
BIT_DEPTH_SUBTYPES: dict[str, PcmSubtype] = {
    "16": "PCM_16",
    "24": "PCM_24",
    "32": "PCM_32",
    "float": "FLOAT",
}

DEFAULT_BUCKETS = 1000  # waveform peaks: buckets per clip
MAX_BUCKETS = 100_000


class Preset(BaseModel):
    """A named loudness target and true-peak ceiling."""

    model_config = ConfigDict(frozen=True)

    target_lufs: float
    ceiling_dbtp: float


PRESETS: dict[str, Preset] = {
    "streaming": Preset(target_lufs=-14.0, ceiling_dbtp=-1.0),
    "podcast": Preset(target_lufs=-16.0, ceiling_dbtp=-1.0),
    "broadcast": Preset(target_lufs=-23.0, ceiling_dbtp=-1.0),  # EBU R128
}


def resolve_preset(name: str) -> Preset:
    """The preset called ``name``; ``InvalidRequestError`` naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidRequestError(
            f"unknown loudness preset {name!r}; choose one of {', '.join(PRESETS)}",
            code="unknown_preset",
        ) from None


def resolve_levels(
    preset: str | None, target: float | None = None, ceiling: float | None = None
) -> tuple[float, float]:
    """``(target_lufs, ceiling_dbtp)``: ``preset``'s (``DEFAULT_PRESET``'s when None), with
    ``target`` / ``ceiling`` overriding them when given."""
    chosen = resolve_preset(preset if preset is not None else DEFAULT_PRESET)
    return (
        chosen.target_lufs if target is None else target,
        chosen.ceiling_dbtp if ceiling is None else ceiling,
    )


class EncodeOptions(BaseModel):
    """How to encode. ``subtype`` is the PCM sample format for WAV/FLAC (default 16-bit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: FormatName = "wav"
    subtype: PcmSubtype | None = None
    sample_rate: Literal[44_100, 48_000] | None = None
    dither: bool = True
    dither_seed: int = 0
    fade_in_s: float = Field(default=0.0, ge=0)
    fade_out_s: float = Field(default=0.0, ge=0)
    trim_silence: bool = False
    trim_threshold_dbfs: float = Field(default=-60.0, le=0)
    start_s: float | None = Field(default=None, ge=0)
    end_s: float | None = Field(default=None, gt=0)

    def resolved_subtype(self) -> str:
        """The libsndfile subtype that will be written."""
        if self.format in LOSSY_SUBTYPES:
            if self.subtype is not None:
                raise InvalidRequestError(
                    f"{self.format} is lossy: it has no {self.subtype} sample format",
                    code="bad_subtype",
                )
            return LOSSY_SUBTYPES[self.format]
        subtype = self.subtype or "PCM_16"
        if subtype not in PCM_SUBTYPES[self.format]:
            raise UnsupportedError(
                f"{self.format} cannot store {subtype}; use one of "
                f"{', '.join(PCM_SUBTYPES[self.format])}",
                code="unsupported_subtype",
            )
        return subtype


class ClipOptions(BaseModel):
    """Everything the chain needs: loudness target, analysis detail, encoding.

    ``target_lufs`` / ``ceiling_dbtp`` override the preset's values when given; without a
    preset they default to ``DEFAULT_PRESET``'s.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str | None = DEFAULT_PRESET
    target_lufs: float | None = None
    ceiling_dbtp: float | None = None
    waveform_buckets: int = Field(default=DEFAULT_BUCKETS, ge=1, le=MAX_BUCKETS)
    waveform_bits: Literal[8, 16] = 8
    encoding: EncodeOptions = EncodeOptions()

    def levels(self) -> tuple[float, float]:
        """``(target_lufs, ceiling_dbtp)`` after applying the preset and the overrides."""
        return resolve_levels(self.preset, self.target_lufs, self.ceiling_dbtp)
