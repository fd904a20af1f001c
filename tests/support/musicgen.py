"""Shared helpers for the engine and MusicGen deployment tests (not a test module).

The tiny random-weight MusicGen is built once per test process (a session-wide cache), into a
temporary directory, and loaded through audiocraft's real ``get_pretrained`` loader.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np


@functools.cache
def tiny_model_dir() -> Path:
    """A directory holding a tiny MusicGen checkpoint (built on first use, removed at exit)."""
    from engines.tiny_model import make_tiny_model

    root = Path(tempfile.mkdtemp(prefix="musicfn-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return make_tiny_model(root / "tiny-musicgen", seed=1234)


def estimate_bpm(audio: np.ndarray, sample_rate: int) -> float:
    """Tempo of (channels, samples) audio with librosa's beat tracker."""
    import librosa

    y = librosa.resample(librosa.to_mono(audio), orig_sr=sample_rate, target_sr=22050)
    tempo, _ = librosa.beat.beat_track(y=y, sr=22050)
    return float(np.atleast_1d(tempo)[0])


_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(audio: np.ndarray, sample_rate: int) -> tuple[int, bool]:
    """(tonic pitch class, minor) by Krumhansl–Schmuckler profile correlation of mean chroma."""
    import librosa

    y = librosa.resample(librosa.to_mono(audio), orig_sr=sample_rate, target_sr=22050)
    chroma = librosa.feature.chroma_cqt(y=y, sr=22050).mean(axis=1)
    scores = [
        (float(np.corrcoef(chroma, np.roll(profile, k))[0, 1]), k, minor)
        for k in range(12)
        for profile, minor in ((_MAJOR, False), (_MINOR, True))
    ]
    _, tonic, minor = max(scores)
    return tonic, minor
