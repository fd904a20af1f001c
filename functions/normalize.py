"""Loudness normalisation to a target with a true-peak ceiling (EBU R128 style).

Every branch ends with the output measured again (BS.1770 on the samples returned, true peak
4x oversampled) and is corrected until it is within ``TOLERANCE_LU`` of the target; when that
cannot be done the report says why (``off_target_reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from functions.audio import Audio, check_audio, db_to_lin, lin_to_db
from functions.limiter import DEFAULT_LOOKAHEAD_S, DEFAULT_RELEASE_S, limit
from functions.loudness import (
    BlockPowers,
    block_powers,
    gain_for_loudness,
    integrated_lufs,
    loudness_stats,
)
from functions.options import DEFAULT_PRESET as DEFAULT_PRESET
from functions.options import PRESETS as PRESETS
from functions.options import PresetName as PresetName
from functions.options import resolve_levels as resolve_levels
from functions.options import resolve_preset
from functions.results import NormalizeReport
from functions.truepeak import sample_peak, true_peak
from musicfn.errors import InvalidRequestError

TOLERANCE_LU = 0.05  # how close to the target the measured output must land
MAX_LIMITING_DB = 40.0  # past this the limiter is a distortion box, not a limiter: give up
_STATIC_PASSES = 3
_LIMITER_PASSES = 8
_MIN_SLOPE = 0.05  # LU gained per dB of pre-gain below which the ceiling has capped loudness
_MIN_TARGET, _MAX_TARGET = -60.0, -5.0
_MIN_CEILING, _MAX_CEILING = -20.0, 0.0


@dataclass(frozen=True)
class _Try:
    """One candidate output, measured."""

    audio: Audio
    gain_db: float
    powers: BlockPowers
    tpeak: float
    reduction_db: float = 0.0

    @property
    def reached(self) -> float | None:
        return integrated_lufs(self.powers)

    def error(self, target: float) -> float:
        reached = self.reached
        return abs(target - reached) if reached is not None else float("inf")


def normalize(
    audio: Audio,
    sample_rate: int,
    target: float | None = None,
    ceiling: float | None = None,
    *,
    preset: str | None = None,
    lookahead_s: float = DEFAULT_LOOKAHEAD_S,
    release_s: float = DEFAULT_RELEASE_S,
) -> tuple[Audio, NormalizeReport]:
    """Bring ``audio`` (``(channels, samples)``) to ``target`` LUFS with its true peak at most
    ``ceiling`` dBTP; returns new arrays of the same shape and the report.

    A static gain reaches the target (solved against the gates, then re-measured and
    corrected); if that pushes the true peak over the ceiling, the look-ahead limiter takes the
    peaks down and the pre-gain is searched until the limited output measures on target. A
    ``preset`` name overrides ``target`` and ``ceiling``; both default to ``DEFAULT_PRESET``'s.
    Silent input (nothing above -70 LUFS) and clips shorter than one 400 ms block come back
    unchanged with ``skipped_reason`` set.
    """
    if preset is not None:
        chosen = resolve_preset(preset)
        target, ceiling = chosen.target_lufs, chosen.ceiling_dbtp
    target, ceiling = resolve_levels(None, target, ceiling)
    _check_levels(target, ceiling)
    audio = check_audio(audio, sample_rate)
    powers = block_powers(audio, sample_rate)
    tpeak = true_peak(audio)
    before = loudness_stats(powers, sample_peak(audio), tpeak)
    common = {"preset": preset, "target_lufs": target, "ceiling_dbtp": ceiling, "before": before}

    if before.integrated_lufs is None:
        return audio.copy(), NormalizeReport.model_validate(
            {
                **common,
                "after": before,
                "gain_db": 0.0,
                "limiter_applied": False,
                "limiter_max_reduction_db": 0.0,
                "skipped_reason": before.integrated_unavailable_reason,
            }
        )

    solved = gain_for_loudness(powers, target)
    start_db = solved if solved is not None else target - before.integrated_lufs
    ceiling_lin = db_to_lin(ceiling)
    best, reason = _static(audio, sample_rate, target, ceiling_lin, start_db)
    limited = best.tpeak > ceiling_lin
    if limited:
        peak_gain_db = 20.0 * math.log10(ceiling_lin / tpeak)
        best, reason = _limited(
            audio,
            sample_rate,
            target,
            ceiling_lin,
            best.gain_db,
            peak_gain_db + MAX_LIMITING_DB,
            (lookahead_s, release_s),
        )
    if reason is None and best.error(target) > TOLERANCE_LU:
        reason = f"still {best.error(target):.2f} LU off the target after every correction"
    after = loudness_stats(best.powers, sample_peak(best.audio), best.tpeak)
    return best.audio, NormalizeReport.model_validate(
        {
            **common,
            "after": after,
            "gain_db": round(best.gain_db, 4),
            "limiter_applied": limited,
            "limiter_max_reduction_db": round(best.reduction_db, 4),
            "off_target_reason": reason if best.error(target) > TOLERANCE_LU else None,
        }
    )


def _apply(audio: Audio, gain_db: float) -> Audio:
    return (audio * np.float32(db_to_lin(gain_db))).astype(np.float32, copy=False)


def _static(
    audio: Audio, sample_rate: int, target: float, ceiling: float, gain_db: float
) -> tuple[_Try, str | None]:
    """Apply ``gain_db``, measure the output, and correct the gain by the error (float32
    rounding, or a gate step the block powers did not foresee) until it is on target; stops
    early when the true peak is over ``ceiling`` (linear): the limiter takes over."""

    def attempt(gain: float) -> _Try:
        out = _apply(audio, gain)
        return _Try(out, gain, block_powers(out, sample_rate), true_peak(out))

    best = latest = attempt(gain_db)
    for _ in range(_STATIC_PASSES - 1):
        reached = latest.reached
        if reached is None or latest.error(target) <= TOLERANCE_LU or latest.tpeak > ceiling:
            break
        latest = attempt(latest.gain_db + target - reached)
        if latest.error(target) < best.error(target):
            best = latest
    if best.reached is None:
        return best, "the gained audio measures silent (below the -70 LUFS gate)"
    return best, None


def _limited(
    audio: Audio,
    sample_rate: int,
    target: float,
    ceiling: float,
    gain_db: float,
    max_gain_db: float,
    timing: tuple[float, float],
) -> tuple[_Try, str | None]:
    """Search the pre-gain (at most ``max_gain_db``) whose limited output measures ``target``.

    Loudness rises with the pre-gain, more slowly the harder the limiter works: bracket the
    target and step by secant. Stops with a reason when the ceiling caps the loudness (the
    slope flattens, or the limiter would need more than ``MAX_LIMITING_DB``) or the loudness
    steps over the target.
    """

    def attempt(gain: float) -> _Try:
        out, reduction, out_tpeak = limit(
            _apply(audio, gain), sample_rate, ceiling, lookahead_s=timing[0], release_s=timing[1]
        )
        return _Try(out, gain, block_powers(out, sample_rate), out_tpeak, reduction)

    low: tuple[float, float] | None = None  # (gain_db, reached) with reached < target
    high: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    best = latest = attempt(min(gain_db, max_gain_db))
    for _ in range(_LIMITER_PASSES):
        reached, gain_db = latest.reached, latest.gain_db
        if reached is None:
            return best, "the limited audio measures silent (below the -70 LUFS gate)"
        if latest.error(target) <= TOLERANCE_LU:
            return best, None
        ceiling_db = lin_to_db(ceiling)
        if reached < target and gain_db >= max_gain_db:
            return best, (
                f"the {ceiling_db} dBTP ceiling caps loudness: {reached:.2f} LUFS already "
                f"takes {latest.reduction_db:.1f} dB of limiting (at most {MAX_LIMITING_DB:g})"
            )
        if (
            previous is not None
            and reached < target
            and gain_db > previous[0]
            and 0.0 <= (reached - previous[1]) / (gain_db - previous[0]) < _MIN_SLOPE
        ):
            return best, (
                f"the {ceiling_db} dBTP ceiling caps loudness near {reached:.2f} LUFS: "
                "more gain only adds limiting"
            )
        if reached < target:
            low = (gain_db, reached)
        else:
            high = (gain_db, reached)
        if low is not None and high is not None and abs(high[0] - low[0]) < 1e-3:
            return best, (
                f"loudness steps over the target, from {low[1]:.2f} to {high[1]:.2f} LUFS "
                "within 0.001 dB of gain (blocks crossing the gates)"
            )
        following = _next_gain(target, gain_db, reached, low, high, previous)
        previous = (gain_db, reached)
        latest = attempt(min(following, max_gain_db))
        if latest.error(target) < best.error(target):
            best = latest
    return best, None


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
