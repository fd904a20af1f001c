"""Key and mode: Temperley's probabilistic key model on per-frame pitch-class presence.

Temperley's (Kostka-Payne) profiles are the probabilities that each scale degree occurs in a
segment of music in a given key (Music and Probability, 2007). Treating each frame's
pitch-class presence ``x`` (functions.chroma, 0..1) as that occurrence, the log-likelihood of a
key is ``sum_frames sum_pc x log p + (1 - x) log (1 - p)``: linear in the presence summed over
frames, so the whole clip is scored with one (24, 12) product. Counting presence per frame,
rather than energy per clip, keeps a held or loud note from outvoting the others, and the
likelihood (unlike a correlation) also weighs which pitch classes are absent, which is what
separates a key from its relative and parallel neighbours.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from functions.chroma import frame_chroma
from functions.results import KeyResult
from functions.spectrum import Spectrum

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# P(pitch class present | key) for C..B, major then minor (Temperley 2007, Kostka-Payne corpus).
TEMPERLEY = (
    [0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400],
    [0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330],
)
# Adjacent frames repeat each other; the evidence of one second of music counts once. A second
# is a beat or two, about as long as a set of sounding pitch classes lasts.
OBSERVATION_S = 1.0
_MIN_PRESENCE = 1e-9

Float64Array = npt.NDArray[np.float64]


@lru_cache(maxsize=1)
def _log_profiles() -> tuple[Float64Array, Float64Array]:
    """``(log p, log (1 - p))``, each (24, 12): rows 0-11 major on C..B, 12-23 minor."""
    present = np.zeros((24, 12))
    absent = np.zeros((24, 12))
    for mode, profile in enumerate(TEMPERLEY):
        p = np.asarray(profile)
        for tonic in range(12):
            present[mode * 12 + tonic] = np.log(np.roll(p, tonic))
            absent[mode * 12 + tonic] = np.log1p(-np.roll(p, tonic))
    return present, absent


def key_from_chroma(chroma: npt.ArrayLike, seconds: float | None = None) -> KeyResult | str:
    """The most probable key for pitch-class content, or why there is none.

    ``chroma`` is ``(frames, 12)`` (or ``(12,)`` for one frame), C first, non-negative; each
    frame is scaled to its largest value and all-zero frames are dropped. ``seconds`` is the
    duration those frames cover (default: one second per frame); it sets how much evidence the
    clip holds and so how confident the answer can be.

    ``confidence`` is the posterior probability of the returned key among the 24 under
    Temperley's model (flat prior), counting one independent observation per
    ``OBSERVATION_S`` seconds: near 1/24 when nothing distinguishes the keys, towards 1 as the
    evidence for one key builds up. ``runner_up`` is the next most probable key.
    """
    frames = np.atleast_2d(np.asarray(chroma, dtype=np.float64))
    if frames.ndim != 2 or frames.shape[1] != 12:
        raise ValueError(f"chroma must be shaped (frames, 12), got {frames.shape}")
    frames = np.where(np.isfinite(frames), np.maximum(frames, 0.0), 0.0)
    strongest = frames.max(axis=1)
    frames = frames[strongest > 0] / strongest[strongest > 0, None]
    total = frames.sum(axis=0)
    if frames.shape[0] == 0 or float(total.max() - total.min()) <= _MIN_PRESENCE * frames.shape[0]:
        return "no tonal content"
    count = frames.shape[0]
    present, absent = _log_profiles()
    per_frame = (present @ total + absent @ (count - total)) / count
    observations = (count if seconds is None else seconds) / OBSERVATION_S
    log_posterior = per_frame * observations
    posterior = np.exp(log_posterior - log_posterior.max())
    posterior /= posterior.sum()
    order = np.argsort(posterior)[::-1]
    best, second = int(order[0]), int(order[1])
    tonic, mode = _name(best)
    runner_tonic, runner_mode = _name(second)
    return KeyResult(
        tonic=tonic,
        mode=mode,
        label=f"{tonic} {mode}",
        confidence=round(float(posterior[best]), 4),
        correlation=round(_profile_correlation(total, best), 4),
        runner_up=f"{runner_tonic} {runner_mode}",
        runner_up_confidence=round(float(posterior[second]), 4),
    )


def key_result(spectrum: Spectrum) -> KeyResult | str:
    """Key of the shared spectrum (with the clip's tuning offset), or why there is none."""
    chroma = frame_chroma(spectrum)
    result = key_from_chroma(chroma.presence, chroma.seconds)
    if isinstance(result, str):
        return result
    return result.model_copy(update={"tuning_cents": round(100.0 * chroma.tuning, 1)})


def _profile_correlation(total: Float64Array, index: int) -> float:
    """Pearson correlation between the summed presence and the key's profile."""
    profile = np.roll(np.asarray(TEMPERLEY[index // 12]), index % 12)
    spread = float(total.std()) * float(profile.std())
    if spread == 0.0 or not math.isfinite(spread):
        return 0.0
    return float(np.mean((total - total.mean()) * (profile - profile.mean())) / spread)


def _name(index: int) -> tuple[str, Literal["major", "minor"]]:
    return PITCH_CLASSES[index % 12], ("major" if index < 12 else "minor")
