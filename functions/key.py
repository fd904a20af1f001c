"""Key and mode from the shared spectrum: chroma, then correlation with key profiles.

Chroma is librosa's STFT chroma filter bank (re-implemented in functions.filterbanks) applied
to our power spectrogram (A440 tuning). The clip's chroma vector is correlated with all 24
rotations of Temperley's (Kostka-Payne) profiles. Krumhansl-Kessler's profiles are kept for
reference but not used: with real tones (harmonics reinforce the fifth and third of each note)
they mistake a major triad for the minor key on its third about a quarter of the time in our
tests; Temperley's never did.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from functions.filterbanks import chroma_filterbank
from functions.results import KeyResult
from functions.spectrum import N_FFT, Spectrum

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# (major, minor) weights for C, C#, ... B.
KRUMHANSL_KESSLER = (
    [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88],
    [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17],
)
TEMPERLEY = (
    [0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400],
    [0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330],
)
# Correlation margin between the best and second-best key that counts as fully confident.
_CONFIDENT_MARGIN = 0.15
_MIN_TONAL_ENERGY = 1e-8

Float64Array = npt.NDArray[np.float64]


@lru_cache(maxsize=1)
def _key_templates() -> Float64Array:
    """(24, 12) z-scored templates: rows 0-11 major on C..B, rows 12-23 minor on C..B."""
    rows = np.zeros((24, 12))
    for mode, profile in enumerate(TEMPERLEY):
        p = np.asarray(profile)
        p = (p - p.mean()) / p.std()
        for tonic in range(12):
            rows[mode * 12 + tonic] = np.roll(p, tonic)
    return rows


def chroma_vector(spectrum: Spectrum) -> Float64Array:
    """Energy of each pitch class over the whole clip (C first), summed over frames.

    The filter bank is linear, so the frames are summed first and filtered once.
    """
    total = spectrum.power.sum(axis=0, dtype=np.float64)
    result: Float64Array = chroma_filterbank(spectrum.sample_rate, N_FFT).astype(np.float64) @ total
    return result


def key_from_chroma(chroma: Float64Array) -> KeyResult | str:
    """The best-matching key for a 12-bin chroma vector (C first), or why there is none."""
    if float(chroma.sum()) <= _MIN_TONAL_ENERGY or float(chroma.std()) <= 1e-12:
        return "no tonal content"
    z = (chroma - chroma.mean()) / chroma.std()
    templates = _key_templates()
    norms = np.linalg.norm(templates, axis=1) * np.linalg.norm(z)
    correlations = templates @ z / norms
    order = np.argsort(correlations)[::-1]
    best, second = int(order[0]), int(order[1])
    r1, r2 = float(correlations[best]), float(correlations[second])
    confidence = max(0.0, r1) * min(1.0, (r1 - r2) / _CONFIDENT_MARGIN)
    tonic, mode = _name(best)
    runner_tonic, runner_mode = _name(second)
    return KeyResult(
        tonic=tonic,
        mode=mode,
        label=f"{tonic} {mode}",
        confidence=round(confidence, 4),
        correlation=round(r1, 4),
        runner_up=f"{runner_tonic} {runner_mode}",
    )


def key_result(spectrum: Spectrum) -> KeyResult | str:
    """Key of the shared spectrum, or the reason there is none."""
    return key_from_chroma(chroma_vector(spectrum))


def _name(index: int) -> tuple[str, Literal["major", "minor"]]:
    return PITCH_CLASSES[index % 12], ("major" if index < 12 else "minor")
