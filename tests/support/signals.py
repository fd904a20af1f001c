"""Synthetic test signals for the audio-function tests (all float32, shaped (channels, samples))."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def sine(freq: float, seconds: float, sr: int, dbfs: float, channels: int = 2) -> Audio:
    """A sine whose peak is ``dbfs`` in every channel."""
    t = np.arange(int(seconds * sr)) / sr
    tone = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.tile(tone, (channels, 1)).astype(np.float32)


def _hit(sr: int, kind: str, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    if kind == "click":
        n = int(0.01 * sr)
        t = np.arange(n) / sr
        return np.sin(2 * np.pi * 1500 * t) * np.exp(-t / 0.002)
    if kind == "kick":
        n = int(0.25 * sr)
        t = np.arange(n) / sr
        freq = 50 + 100 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.08)
    if kind == "snare":
        n = int(0.2 * sr)
        t = np.arange(n) / sr
        return 0.6 * rng.standard_normal(n) * np.exp(-t / 0.05)
    n = int(0.05 * sr)  # hat
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    noise = np.diff(noise, prepend=0.0)  # brighter
    return 0.25 * noise * np.exp(-t / 0.01)


def pattern(bpm: float, seconds: float, sr: int, *, drums: bool, seed: int = 0) -> Audio:
    """A click track (one click per beat) or a rock drum pattern (kick 1/3, snare 2/4,
    eighth-note hats) at ``bpm``; stereo, peak about -6 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n + sr)
    beat = 60.0 / bpm
    events: list[tuple[float, str]] = []
    count = int(seconds / beat) + 1
    for i in range(count):
        t = i * beat
        if not drums:
            events.append((t, "click"))
            continue
        events.append((t, "kick" if i % 2 == 0 else "snare"))
        events.append((t, "hat"))
        events.append((t + beat / 2, "hat"))
    for t, kind in events:
        start = round(t * sr)
        if start >= n:
            continue
        hit = _hit(sr, kind, rng)
        out[start : start + hit.size] += hit
    out = out[:n]
    out *= 0.5 / np.abs(out).max()
    return np.stack([out, out]).astype(np.float32)


def _tone(freq: float, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A harmonic tone (decaying partials), like a soft synth or organ."""
    partials = [(1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2), (5, 0.1)]
    return sum(a * np.sin(2 * np.pi * freq * h * t) for h, a in partials)  # type: ignore[return-value]


def midi_freq(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def chord_progression(chords: list[list[int]], seconds_each: float, sr: int) -> Audio:
    """Chords given as MIDI note lists, each held ``seconds_each`` with short fades; stereo."""
    n = int(seconds_each * sr)
    t = np.arange(n) / sr
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    parts = []
    for notes in chords:
        parts.append(fade * sum(_tone(midi_freq(m), t) for m in notes))
    out = np.concatenate(parts)
    out *= 0.5 / np.abs(out).max()
    return np.stack([out, out]).astype(np.float32)


def triad(root: int, minor: bool) -> list[int]:
    return [root, root + (3 if minor else 4), root + 7]


def cadence(tonic: int, minor: bool) -> list[list[int]]:
    """I-IV-V-I (major) or i-iv-V-i (harmonic minor), with the root doubled in the bass."""
    iv = triad(tonic + 5, minor)
    v = triad(tonic + 7, False)  # the dominant is major in harmonic minor
    one = triad(tonic, minor)
    return [[tonic - 12, *one], [tonic - 7, *iv], [tonic - 5, *v], [tonic - 12, *one]]


def pad(seconds: float, sr: int, seed: int = 0) -> Audio:
    """A metronome-free pad: sustained chords crossfading slowly at irregular times."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    roots = [48, 53, 55, 50, 57, 52]
    start = 0.0
    while start < seconds:
        length = rng.uniform(3.0, 7.0)
        root = int(rng.choice(roots))
        env = np.clip(np.minimum((t - start) / 2.5, (start + length + 2.5 - t) / 2.5), 0, 1)
        mask = env > 0
        for m in triad(root, bool(rng.integers(2))):
            detune = rng.uniform(-0.3, 0.3)
            out[mask] += env[mask] * _tone(midi_freq(m) + detune, t[mask]) * 0.3
        start += length
    lfo = 0.8 + 0.2 * np.sin(2 * np.pi * 0.13 * t + 1.0) * np.sin(2 * np.pi * 0.071 * t)
    out *= lfo
    out *= 0.5 / np.abs(out).max()
    return np.stack([out, out * 0.9]).astype(np.float32)
