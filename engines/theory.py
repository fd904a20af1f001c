"""Just enough music theory for prompts and the synth engine: keys, chords, scales, note pitches."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# The tempi a song may ask for (request fields and tempi read from prompts alike).
MIN_BPM, MAX_BPM = 30.0, 300.0

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor

KEY_RE = re.compile(r"^([A-Ga-g])([#b]?)\s*(major|minor|maj|min|m)?$")
CHORD_RE = re.compile(r"^([A-G])([#b]?)(maj7|m7|min7|7|maj|min|m|dim|aug|sus2|sus4)?$")

_CHORD_INTERVALS = {
    "": (0, 4, 7),
    "maj": (0, 4, 7),
    "m": (0, 3, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "min7": (0, 3, 7, 10),
}


def pitch_class(letter: str, accidental: str = "") -> int:
    """Pitch class (0 = C) of a note letter and an accidental (``"#"``, ``"b"`` or ``""``)."""
    pc = _NOTE_INDEX[letter.upper()]
    if accidental == "#":
        pc += 1
    elif accidental == "b":
        pc -= 1
    return pc % 12


@dataclass(frozen=True)
class Key:
    """A tonic pitch class (0 = C) and a mode."""

    tonic: int
    minor: bool

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``"F# minor"``."""
        return f"{_SHARP_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    @property
    def scale(self) -> tuple[int, ...]:
        """The seven pitch classes of the key's scale, tonic first."""
        steps = MINOR_SCALE if self.minor else MAJOR_SCALE
        return tuple((self.tonic + s) % 12 for s in steps)

    def default_progression(self) -> list[Chord]:
        """A four-chord loop that states the key: I–V–vi–IV (major) or i–iv–v–i (minor)."""
        if self.minor:
            degrees = [(0, "m"), (5, "m"), (7, "m"), (0, "m")]
        else:
            degrees = [(0, ""), (7, ""), (9, "m"), (5, "")]
        return [Chord(root=(self.tonic + d) % 12, quality=q) for d, q in degrees]


@dataclass(frozen=True)
class Chord:
    """A chord root pitch class and a quality suffix (``""``, ``"m"``, ``"7"``, …)."""

    root: int
    quality: str

    @property
    def intervals(self) -> tuple[int, ...]:
        """Semitones above the root of each chord tone."""
        return _CHORD_INTERVALS[self.quality]

    @property
    def name(self) -> str:
        """Chord symbol with sharps, e.g. ``"F#m"``."""
        return f"{_SHARP_NAMES[self.root]}{self.quality}"


def parse_key(text: str) -> Key:
    """Parse ``"C major"``, ``"A minor"``, ``"F#m"``, ``"Bb"`` (major when no mode is given)."""
    m = KEY_RE.match(text.strip())
    if m is None:
        raise ValueError(f"not a key: {text!r} (expected e.g. 'C major', 'A minor', 'F#m')")
    minor = (m.group(3) or "").lower() in ("minor", "min", "m")
    return Key(tonic=pitch_class(m.group(1), m.group(2)), minor=minor)


def parse_chord(text: str) -> Chord:
    """Parse a chord symbol such as ``"Am"``, ``"F#m7"``, ``"Bb"``, ``"G7"``, ``"Dsus4"``."""
    m = CHORD_RE.match(text.strip())
    if m is None:
        raise ValueError(f"not a chord symbol: {text!r} (expected e.g. 'C', 'Am', 'F#m7', 'G7')")
    return Chord(root=pitch_class(m.group(1), m.group(2)), quality=m.group(3) or "")


def midi_to_hz(note: float) -> float:
    """Equal-tempered frequency of a (fractional) MIDI note number; A4 = 69 = 440 Hz."""
    return float(440.0 * 2.0 ** ((note - 69.0) / 12.0))


def nearest_midi(pitch_class: int, around: int) -> int:
    """The MIDI note with ``pitch_class`` closest to the MIDI note ``around``."""
    base = around - ((around - pitch_class) % 12)
    return base if around - base <= 6 else base + 12
