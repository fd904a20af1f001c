"""Loudness normalisation to a target with a true-peak ceiling (EBU R128 style)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from functions.audio import Audio, check_audio, db_to_lin
from functions.limiter import DEFAULT_LOOKAHEAD_S, DEFAULT_RELEASE_S, limit
from functions.loudness import block_powers, integrated_lufs, loudness_stats
from functions.results import NormalizeReport
from functions.truepeak import sample_peak, true_peak
from musicfn.errors import InvalidRequestError

PresetName = Literal["streaming", "podcast", "broadcast"]

# How close to the target the loudness must land once the limiter has taken some off.
_TOLERANCE_LU = 0.1
_MAX_LOUDNESS_PASSES = 6
_MIN_TARGET, _MAX_TARGET = -60.0, -5.0
_MIN_CEILING, _MAX_CEILING = -20.0, 0.0


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


def normalize(
    audio: Audio,
    sample_rate: int,
    target: float = -16.0,
    ceiling: float = -1.0,
    *,
    preset: str | None = None,
    lookahead_s: float = DEFAULT_LOOKAHEAD_S,
    release_s: float = DEFAULT_RELEASE_S,
) -> tuple[Audio, NormalizeReport]:
    """Bring ``audio`` to ``target`` LUFS with its true peak at most ``ceiling`` dBTP.

    A static gain reaches the target; if that pushes the true peak over the ceiling, the
    look-ahead limiter takes the peaks down and the gain is raised again until the loudness is
    back on target (within 0.1 LU, as far as the ceiling allows). A ``preset`` name overrides
    ``target`` and ``ceiling``. Silent input (nothing above -70 LUFS) and clips shorter than
    one 400 ms block come back unchanged with ``skipped_reason`` set. Returns new arrays.
    """
    if preset is not None:
        chosen = resolve_preset(preset)
        target, ceiling = chosen.target_lufs, chosen.ceiling_dbtp
    _check_levels(target, ceiling)
    audio = check_audio(audio, sample_rate)
    powers = block_powers(audio, sample_rate)
    peak, tpeak = sample_peak(audio), true_peak(audio)
    before = loudness_stats(powers, peak, tpeak)

    def report(after_audio: Audio, **fields: object) -> tuple[Audio, NormalizeReport]:
        return after_audio, NormalizeReport.model_validate(
            {
                "preset": preset,
                "target_lufs": target,
                "ceiling_dbtp": ceiling,
                "before": before,
                **fields,
            }
        )

    if before.integrated_lufs is None:
        return report(
            audio.copy(),
            after=before,
            gain_db=0.0,
            limiter_applied=False,
            limiter_max_reduction_db=0.0,
            skipped_reason=before.integrated_unavailable_reason,
        )

    gain_db = target - before.integrated_lufs
    ceiling_lin = db_to_lin(ceiling)
    # The margin keeps float32 rounding of the scaled samples from landing a hair over.
    if tpeak * db_to_lin(gain_db) <= ceiling_lin * (1.0 - 1e-6):
        gain = db_to_lin(gain_db)
        out = (audio * np.float32(gain)).astype(np.float32, copy=False)
        after = loudness_stats(powers, peak, tpeak, gain)
        return report(
            out,
            after=after,
            gain_db=round(gain_db, 4),
            limiter_applied=False,
            limiter_max_reduction_db=0.0,
        )

    # The limiter lowers loudness: search the pre-gain whose limited result is on target.
    # Loudness is monotonic in the pre-gain, so bracket the target and step by secant.
    low: tuple[float, float] | None = None  # (gain_db, reached) with reached < target
    high: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    for _ in range(_MAX_LOUDNESS_PASSES):
        out, reduction, out_tpeak = limit(
            (audio * np.float32(db_to_lin(gain_db))).astype(np.float32, copy=False),
            sample_rate,
            ceiling_lin,
            lookahead_s=lookahead_s,
            release_s=release_s,
        )
        out_powers = block_powers(out, sample_rate)
        reached = integrated_lufs(out_powers)
        if reached is None or abs(target - reached) <= _TOLERANCE_LU:
            break
        if reached < target:
            low = (gain_db, reached)
        else:
            high = (gain_db, reached)
        gain_db, previous = (
            _next_gain(target, gain_db, reached, low, high, previous),
            (gain_db, reached),
        )
    after = loudness_stats(out_powers, sample_peak(out), out_tpeak)
    return report(
        out,
        after=after,
        gain_db=round(gain_db, 4),
        limiter_applied=True,
        limiter_max_reduction_db=round(reduction, 4),
    )


def _next_gain(
    target: float,
    gain_db: float,
    reached: float,
    low: tuple[float, float] | None,
    high: tuple[float, float] | None,
    previous: tuple[float, float] | None,
) -> float:
    """Next pre-gain to try: secant inside the bracket, else secant through the last two tries
    (slope 1 for the first step)."""
    if low is not None and high is not None and high[1] > low[1]:
        (g0, l0), (g1, l1) = low, high
        return g0 + (target - l0) * (g1 - g0) / (l1 - l0)
    slope = 1.0
    if previous is not None and previous[0] != gain_db:
        slope = min(1.0, max(0.1, (reached - previous[1]) / (gain_db - previous[0])))
    return gain_db + (target - reached) / slope


def _check_levels(target: float, ceiling: float) -> None:
    if not _MIN_TARGET <= target <= _MAX_TARGET:
        raise InvalidRequestError(
            f"target {target} LUFS is outside {_MIN_TARGET:g} to {_MAX_TARGET:g} LUFS",
            code="target_out_of_range",
        )
    if not _MIN_CEILING <= ceiling <= _MAX_CEILING:
        raise InvalidRequestError(
            f"ceiling {ceiling} dBTP is outside {_MIN_CEILING:g} to {_MAX_CEILING:g} dBTP",
            code="ceiling_out_of_range",
        )
