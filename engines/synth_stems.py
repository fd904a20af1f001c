"""Procedural instrument voices for the synth engine (numpy only, deterministic given a rng).

Every voice renders a mono float32 signal of ``ctx.samples`` samples on the song grid (beats at
``ctx.bpm``, one chord per bar). Notes are rendered one by one and added at their onsets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.theory import Chord, Key, midi_to_hz, nearest_midi

TWO_PI = 2.0 * np.pi
# Longest a chord is held; slower bars change chords on the half bar or the beat.
MAX_CHORD_S = 2.5
# Slower than this, eighth notes come at a walking pace and are heard as the beat.
SUBDIVIDE_BPM = 64.0
_BASS_DECAY_S = 0.3
_PUMP_DEPTH, _PUMP_RECOVERY_S = 0.7, 0.08  # the pad's duck on every beat


@dataclass(frozen=True)
class SongContext:
    """The grid and harmony every voice follows."""

    sample_rate: int
    samples: int
    bpm: float
    key: Key
    chords: tuple[Chord, ...]
    rng: np.random.Generator
    beats_per_bar: int = 4

    @property
    def beat_s(self) -> float:
        """Seconds per beat."""
        return 60.0 / self.bpm

    def beats(self, subdivision: int = 1) -> list[tuple[int, float]]:
        """(index, onset seconds) of every 1/``subdivision`` beat inside the song."""
        step = self.beat_s / subdivision
        count = int(self.samples / self.sample_rate / step) + 1
        return [(i, i * step) for i in range(count)]

    @property
    def beats_per_chord(self) -> int:
        """Beats each chord lasts: a bar, or half a bar or one beat when a bar is longer than
        ``MAX_CHORD_S``, so a slow song still plays its whole chord loop in a short clip."""
        for beats in (self.beats_per_bar, self.beats_per_bar // 2):
            if beats >= 1 and beats * self.beat_s <= MAX_CHORD_S:
                return beats
        return 1

    @property
    def subdivision(self) -> int:
        """Notes per beat of the voices that play eighths: 2, or 1 below ``SUBDIVIDE_BPM``."""
        return 2 if self.bpm >= SUBDIVIDE_BPM else 1

    @property
    def chord_s(self) -> float:
        """Seconds per chord."""
        return self.beats_per_chord * self.beat_s

    def chord_at(self, t: float) -> Chord:
        """The chord sounding at ``t`` seconds (one per ``beats_per_chord`` beats, looping)."""
        index = int(t / self.chord_s + 1e-9)
        return self.chords[index % len(self.chords)]


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _place(buf: np.ndarray, onset_s: float, sr: int, note: np.ndarray) -> None:
    start = round(onset_s * sr)
    if start >= buf.shape[0]:
        return
    end = min(buf.shape[0], start + note.shape[0])
    buf[start:end] += note[: end - start]


def _partials(freq: float, t: np.ndarray, weights: list[float], phase: float = 0.0) -> np.ndarray:
    out = np.zeros_like(t)
    for k, w in enumerate(weights, start=1):
        if freq * k < 15_000:
            out += w * np.sin(TWO_PI * freq * k * t + phase * k)
    return out


def drums(ctx: SongContext) -> np.ndarray:
    """Kick on 1 and 3, snare on 2 and 4 (in 3/4: kick on 1, snare on 2 and 3), quiet closed
    hats on eighths (on the beat only below ``SUBDIVIDE_BPM``).

    Kick and snare get equally strong broadband attacks so every beat is an equally clear onset
    (an accent every other beat would make tempo estimators hear half time).
    """
    sr, buf, rng = ctx.sample_rate, np.zeros(ctx.samples), ctx.rng
    t = _time(int(0.25 * sr), sr)
    sweep = 45.0 + 75.0 * np.exp(-t / 0.03)
    body = np.sin(TWO_PI * np.cumsum(sweep) / sr) * np.exp(-t / 0.09)
    for i, onset in ctx.beats(1):
        attack = rng.standard_normal(t.shape[0]) * np.exp(-t / 0.012)
        beat = i % ctx.beats_per_bar
        if beat == 0 or (beat % 2 == 0 and beat < ctx.beats_per_bar - 1):
            hit = body + 0.5 * attack
        else:
            hit = 0.45 * rng.standard_normal(t.shape[0]) * np.exp(-t / 0.05) + 0.5 * attack + (
                0.35 * np.sin(TWO_PI * 185 * t) * np.exp(-t / 0.05)
            )
        _place(buf, onset, sr, hit)
    th = _time(int(0.04 * sr), sr)
    for _, onset in ctx.beats(ctx.subdivision):
        hat = np.diff(rng.standard_normal(th.shape[0] + 1)) * np.exp(-th / 0.008)
        _place(buf, onset, sr, 0.04 * hat)
    return buf


def bass(ctx: SongContext) -> np.ndarray:
    """Quarter notes two octaves below middle C through the chord: the root, the third on the
    third beat of a chord and the fifth on its last (of two or more).

    Notes decay within ``_BASS_DECAY_S`` whatever the tempo: long low notes at a slow tempo
    would otherwise fill most frames with the roots alone, and roots alone (I V vi IV) fit the
    key a fourth up as well as the song's.
    """
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    length = ctx.beat_s * 0.9
    t = _time(int(length * sr), sr)
    env = np.minimum(1.0, t / 0.005) * np.exp(-t / min(length * 0.6, _BASS_DECAY_S))
    per_chord = ctx.beats_per_chord
    for i, onset in ctx.beats(1):
        chord = ctx.chord_at(onset)
        beat = i % per_chord
        step = 0
        if per_chord >= 2 and beat == per_chord - 1:
            step = chord.intervals[2]
        elif beat == 2:
            step = chord.intervals[1]
        note = nearest_midi(chord.root, 40) + step
        _place(buf, onset, sr, env * _partials(midi_to_hz(note), t, [1.0, 0.5, 0.25, 0.12]))
    return buf


def piano(ctx: SongContext) -> np.ndarray:
    """The chord struck on every beat, each tone with bright, fast-decaying upper partials."""
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    t = _time(int(ctx.beat_s * sr), sr)
    for _, onset in ctx.beats(1):
        chord = ctx.chord_at(onset)
        for interval in chord.intervals:
            f = midi_to_hz(nearest_midi((chord.root + interval) % 12, 62))
            tone = (
                np.sin(TWO_PI * f * t) * np.exp(-t / 0.8)
                + 0.4 * np.sin(TWO_PI * 2 * f * t) * np.exp(-t / 0.3)
                + 0.15 * np.sin(TWO_PI * 3 * f * t) * np.exp(-t / 0.15)
            )
            _place(buf, onset, sr, 0.35 * np.minimum(1.0, t / 0.003) * tone)
    return buf


def synth_pad(ctx: SongContext) -> np.ndarray:
    """Sustained, slightly detuned chord tones with a slow attack and release per chord,
    "side-chained" to the beat: ducked on every beat and swelling back within it.

    Without the pump the pad's only onsets are its chord changes, a pulse at the bar that
    tempo estimators then hear as the beat (or pull the beat to half time with).
    """
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    length = ctx.chord_s
    t = _time(int(length * sr), sr)
    env = np.minimum(1.0, t / 0.25) * np.minimum(1.0, (length - t) / 0.2).clip(0.0)
    for i, onset in ctx.beats(1):
        if i % ctx.beats_per_chord:
            continue
        chord = ctx.chord_at(onset)
        for interval in chord.intervals:
            f = midi_to_hz(nearest_midi((chord.root + interval) % 12, 57))
            tone = _partials(f, t, [1.0, 0.3, 0.1]) + _partials(f * 1.003, t, [0.8, 0.2])
            _place(buf, onset, sr, 0.2 * env * tone)
    since_beat = np.mod(_time(ctx.samples, sr), ctx.beat_s)
    buf *= 1.0 - _PUMP_DEPTH * np.exp(-since_beat / _PUMP_RECOVERY_S)
    return buf


def guitar(ctx: SongContext) -> np.ndarray:
    """Down-strums on every beat: staggered chord tones, saturated with tanh."""
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    t = _time(int(ctx.beat_s * sr), sr)
    env = np.minimum(1.0, t / 0.004) * np.exp(-t / 0.35)
    for _, onset in ctx.beats(1):
        chord = ctx.chord_at(onset)
        for j, interval in enumerate((*chord.intervals[:3], 12)):
            f = midi_to_hz(nearest_midi((chord.root + interval) % 12, 55) + (12 if j == 3 else 0))
            tone = np.tanh(2.5 * _partials(f, t, [1.0, 0.6, 0.4, 0.25, 0.15]))
            _place(buf, onset + 0.012 * j, sr, 0.25 * env * tone)
    return buf


# (F1, F2, F3) in Hz for the vowels a, o, e.
_VOWELS = ((730.0, 1090.0, 2440.0), (570.0, 840.0, 2410.0), (530.0, 1840.0, 2480.0))


def vocals(ctx: SongContext) -> np.ndarray:
    """A sung line on chord tones, two beats per note (one when chords change on the beat):
    harmonics shaped by vowel formants, with 5.5 Hz vibrato."""
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    beats = min(2, ctx.beats_per_chord)
    length = beats * ctx.beat_s
    t = _time(int(length * sr), sr)
    env = np.minimum(1.0, t / 0.06) * np.minimum(1.0, (length - t) / 0.08).clip(0.0)
    for i, onset in ctx.beats(1):
        if i % beats:
            continue
        chord = ctx.chord_at(onset)
        pc = (chord.root + chord.intervals[(i // beats) % len(chord.intervals)]) % 12
        f0 = midi_to_hz(nearest_midi(pc, 67))
        vibrato = 1.0 + 0.012 * np.sin(TWO_PI * 5.5 * t) * np.minimum(1.0, t / 0.3)
        phase = TWO_PI * np.cumsum(f0 * vibrato) / sr
        formants = _VOWELS[int(ctx.rng.integers(len(_VOWELS)))]
        voice = np.zeros_like(t)
        for k in range(1, int(5000 / f0)):
            gain = sum(np.exp(-(((k * f0 - fm) / 110.0) ** 2)) for fm in formants) + 0.3 / k
            voice += gain * np.sin(k * phase)
        _place(buf, onset, sr, 0.12 * env * voice)
    return buf


def other(ctx: SongContext) -> np.ndarray:
    """Bell-like arpeggio: a chord tone on every beat (the next one each beat), and the chord's
    fifth, quieter, on the off-beat (none below ``SUBDIVIDE_BPM``)."""
    sr, buf = ctx.sample_rate, np.zeros(ctx.samples)
    t = _time(int(ctx.beat_s * sr), sr)
    env = np.minimum(1.0, t / 0.002) * np.exp(-t / 0.12)
    per_beat = ctx.subdivision
    for i, onset in ctx.beats(per_beat):
        chord = ctx.chord_at(onset)
        on_beat = i % per_beat == 0
        step = chord.intervals[(i // per_beat) % len(chord.intervals)] if on_beat else 7
        f = midi_to_hz(nearest_midi((chord.root + step) % 12, 79))
        tone = np.sin(TWO_PI * f * t) + 0.3 * np.sin(TWO_PI * 2.76 * f * t) * np.exp(-t / 0.05)
        _place(buf, onset, sr, (0.15 if on_beat else 0.06) * env * tone)
    return buf


VOICES: dict[str, Callable[[SongContext], np.ndarray]] = {
    "drums": drums,
    "bass": bass,
    "guitar": guitar,
    "vocals": vocals,
    "piano": piano,
    "synth": synth_pad,
    "other": other,
}
# Stereo position per stem, -1 (left) … 1 (right).
PAN = {"drums": 0.0, "bass": 0.0, "guitar": -0.35, "vocals": 0.0, "piano": 0.3, "synth": 0.0,
       "other": 0.45}
