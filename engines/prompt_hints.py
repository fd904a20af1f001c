"""Musical facts read from a text prompt: tempo, key, mood (mode) and a style word.

``read_prompt("dark techno, 128 bpm")`` → bpm 128, style ``techno``, mode ``minor``. Nothing here
decides what a song finally uses: the synth engine ranks explicit request fields over what the
prompt says, and what the prompt says over the defaults of its style (``STYLES``).

What is recognised:

- tempo: ``"70 bpm"``, ``"128 BPM"``, ``"at 90bpm"``, ``"100 beats per minute"``,
  ``"tempo 95"``; outside ``theory.MIN_BPM``..``MAX_BPM`` it is ignored;
- key: a note (``C``, ``F#``, ``Bb``, ``E♭``, ``F sharp``, ``B flat``) with a mode word
  (``major``/``minor``/``maj``/``min``, or ``m`` right after it: ``"F#m"``), or after ``"in"``
  or ``"key of"`` without one (``"in D"`` is D major unless a mood says minor). A lone
  lower-case ``"a"`` needs ``"in"``/``"key of"`` before it (``"a minor hit"`` is no key);
- mood: ``MOOD_WORDS`` (``dark``, ``sad`` → minor; ``happy``, ``uplifting`` → major);
- style: the first word or phrase of ``STYLES`` in the text (``"drum and bass"``, ``"lo-fi"``).
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines import theory

Mode = Literal["major", "minor"]
_T = TypeVar("_T")


class StyleDefaults(BaseModel):
    """What a style word implies when the request and the prompt leave it open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    words: tuple[str, ...] = Field(description="phrases that name the style (lower case)")
    bpm: float = Field(ge=theory.MIN_BPM, le=theory.MAX_BPM)
    key: str = Field(description="default key, e.g. 'A minor'")
    arrangement: dict[str, float] = Field(description="stem → level of the style's mix")
    beats_per_bar: int = Field(default=4, ge=2, le=7)

    @field_validator("key")
    @classmethod
    def _canonical_key(cls, v: str) -> str:
        return theory.parse_key(v).name


# The style vocabulary: one row per style, the first matching phrase in a prompt picks it.
STYLES: dict[str, StyleDefaults] = {
    name: StyleDefaults.model_validate(row)
    for name, row in {
        "techno": {"words": ("techno",), "bpm": 128, "key": "A minor",
                   "arrangement": {"drums": 1.0, "bass": 0.7, "synth": 0.35, "other": 0.3}},
        "house": {"words": ("house", "garage"), "bpm": 124, "key": "F minor",
                  "arrangement": {"drums": 0.95, "bass": 0.7, "piano": 0.5, "synth": 0.35}},
        "trance": {"words": ("trance",), "bpm": 138, "key": "E minor",
                   "arrangement": {"drums": 0.9, "bass": 0.6, "synth": 0.5, "other": 0.4}},
        "ambient": {"words": ("ambient", "drone", "meditation", "new age"), "bpm": 70,
                    "key": "D major",
                    "arrangement": {"synth": 0.7, "piano": 0.55, "other": 0.3, "bass": 0.3}},
        "hip hop": {"words": ("hip hop", "hip-hop", "hiphop", "boom bap", "rap"), "bpm": 90,
                    "key": "C minor",
                    "arrangement": {"drums": 1.0, "bass": 0.75, "piano": 0.45, "other": 0.2}},
        "lofi": {"words": ("lofi", "lo-fi", "lo fi", "chillhop"), "bpm": 80, "key": "Eb major",
                 "arrangement": {"drums": 0.85, "bass": 0.6, "piano": 0.55, "synth": 0.25}},
        "trap": {"words": ("trap",), "bpm": 140, "key": "G minor",
                 "arrangement": {"drums": 1.0, "bass": 0.8, "other": 0.3, "synth": 0.3}},
        "drum and bass": {"words": ("drum and bass", "drum & bass", "drum n bass",
                                    "drum'n'bass", "drum 'n' bass", "dnb", "d&b", "jungle"),
                          "bpm": 174, "key": "F minor",
                          "arrangement": {"drums": 1.0, "bass": 0.75, "synth": 0.35}},
        "dubstep": {"words": ("dubstep", "brostep"), "bpm": 140, "key": "F# minor",
                    "arrangement": {"drums": 1.0, "bass": 0.85, "synth": 0.35}},
        "rock": {"words": ("rock", "grunge"), "bpm": 120, "key": "E major",
                 "arrangement": {"drums": 0.9, "bass": 0.7, "guitar": 0.6, "vocals": 0.35}},
        "punk": {"words": ("punk",), "bpm": 170, "key": "A major",
                 "arrangement": {"drums": 1.0, "bass": 0.7, "guitar": 0.65}},
        "jazz": {"words": ("jazz", "jazzy", "bebop", "swing"), "bpm": 112, "key": "Bb major",
                 "arrangement": {"drums": 0.6, "bass": 0.75, "piano": 0.65}},
        "reggae": {"words": ("reggae", "ska", "dub"), "bpm": 76, "key": "G major",
                   "arrangement": {"drums": 0.85, "bass": 0.8, "guitar": 0.45, "piano": 0.35}},
        "funk": {"words": ("funk", "funky", "disco"), "bpm": 112, "key": "E minor",
                 "arrangement": {"drums": 0.9, "bass": 0.8, "guitar": 0.5, "other": 0.25}},
        "pop": {"words": ("pop",), "bpm": 116, "key": "C major",
                "arrangement": {"drums": 0.85, "bass": 0.65, "piano": 0.45, "vocals": 0.4}},
        "waltz": {"words": ("waltz",), "bpm": 96, "key": "G major", "beats_per_bar": 3,
                  "arrangement": {"drums": 0.7, "bass": 0.7, "piano": 0.6}},
    }.items()
}

_STYLE_WORDS = {word: name for name, row in STYLES.items() for word in row.words}

# Mood words that imply a mode when the prompt names no mode itself.
_MINOR_MOODS = ("dark", "sad", "melancholic", "melancholy", "moody", "gloomy", "sombre", "somber",
                "haunting", "ominous", "brooding", "minor key", "minor-key")
_MAJOR_MOODS = ("happy", "uplifting", "cheerful", "joyful", "bright", "sunny", "euphoric",
                "triumphant", "major key", "major-key")
_STYLE_WORDS = {word: name for name, row in STYLES.items() for word in row.words}

# Mood words that imply a mode when the prompt names no mode itself.
MOOD_WORDS: dict[str, Mode] = {
    **dict.fromkeys(_MINOR_MOODS, "minor"), **dict.fromkeys(_MAJOR_MOODS, "major")
}


class PromptHints(BaseModel):
    """What a prompt says about tempo, key, mode and style (None when it says nothing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bpm: float | None = Field(default=None, description="tempo named in the prompt")
    key: str | None = Field(default=None, description="key named in the prompt, e.g. 'D minor'")
    mode: Mode | None = Field(default=None, description="mode implied by a mood word")
    style: str | None = Field(default=None, description="a name in STYLES")


_NUMBER = r"(\d{2,3}(?:\.\d+)?)"
_BPM_RES = (
    re.compile(_NUMBER + r"\s*-?\s*(?:bpm|b\.p\.m\.?|beats?\s+(?:per|a)\s+minute)\b", re.I),
    re.compile(r"\btempo\s*(?:of|:|=|at)?\s*" + _NUMBER + r"\b", re.I),
)
_ACCIDENTAL = r"(#|♯|b|♭|-?\s?sharp|-?\s?flat)?"
_MODE = r"(major|minor|maj|min)\b"
_KEY_RES = (
    # A note with a mode word: "D minor", "F# major", "Bb min", "E♭ major", "f sharp minor".
    re.compile(r"(?<![\w#♯♭])(?:(in|key\s+of)\s+)?([A-Ga-g])" + _ACCIDENTAL + r"\s*" + _MODE,
               re.I),
    # A chord-style minor key: "F#m", "Am", "in Ebm".
    re.compile(r"(?<![\w#♯♭])(?:(in|key\s+of)\s+)?([A-G])" + _ACCIDENTAL + r"(m)\b"),
    # A bare note after "in" / "key of": "in D", "key of Bb" (the mode comes from the mood).
    re.compile(r"\b(in|key\s+of)\s+([A-G])" + _ACCIDENTAL + r"()(?![\w#♯♭'’-])"),
)


def read_prompt(prompt: str) -> PromptHints:
    """Tempo, key, mood mode and style named in ``prompt`` (see the module docstring)."""
    mode = _first(prompt, MOOD_WORDS)
    tonic, minor = _read_key(prompt)
    key = None
    if tonic is not None:
        minor = minor if minor is not None else mode == "minor"
        key = theory.Key(tonic=tonic, minor=minor).name
    style = _first(prompt, _STYLE_WORDS)
    return PromptHints(bpm=_read_bpm(prompt), key=key, mode=mode, style=style)


def _read_bpm(text: str) -> float | None:
    for pattern in _BPM_RES:
        for match in pattern.finditer(text):
            bpm = float(match.group(1))
            if theory.MIN_BPM <= bpm <= theory.MAX_BPM:
                return bpm
    return None


def _read_key(text: str) -> tuple[int | None, bool | None]:
    """(tonic, minor) of the first key named in ``text``; minor is None when no mode is named."""
    found: list[tuple[int, int, bool | None]] = []
    for pattern in _KEY_RES:
        for match in pattern.finditer(text):
            lead, letter, accidental, mode = match.group(1, 2, 3, 4)
            if letter == "a" and not lead:
                continue  # the article: "a minor hit", "a major label"
            sign = (accidental or "").replace("-", "").strip().lower()
            sign = {"♯": "#", "sharp": "#", "♭": "b", "flat": "b"}.get(sign, sign)
            minor = mode.lower() in ("minor", "min", "m") if mode else None
            found.append((match.start(), theory.pitch_class(letter, sign), minor))
            break
    if not found:
        return None, None
    _, tonic, minor = min(found, key=lambda hit: hit[0])
    return tonic, minor


def _first(text: str, phrases: dict[str, _T]) -> _T | None:
    """The value of the phrase of ``phrases`` that occurs first in ``text`` (whole words; the
    longer phrase when two start at the same place)."""
    best: tuple[int, int, _T] | None = None
    for phrase, value in phrases.items():
        match = re.search(r"(?<![\w'-])" + re.escape(phrase) + r"(?![\w'-])", text, re.I)
        if match is not None and (best is None or (match.start(), -len(phrase)) < best[:2]):
            best = (match.start(), -len(phrase), value)
    return None if best is None else best[2]
