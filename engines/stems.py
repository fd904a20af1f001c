"""Turning a request into engine jobs: one per stem (with its own prompt and seed), or one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from engines.base import GenerationJob
from engines.requests import MAX_SEED, GenerationRequest

# How each stem is named in a text prompt.
STEM_PHRASES = {
    "drums": "drums",
    "bass": "bass line",
    "guitar": "electric guitar",
    "vocals": "vocals",
    "piano": "piano",
    "synth": "synth pad",
    "other": "arpeggiated bells",
}


def build_prompt(
    prompt: str,
    *,
    stem: str | None = None,
    style: str | None = None,
    bpm: float | None = None,
    key: str | None = None,
    chords: Sequence[str] | None = None,
) -> str:
    """A text prompt from the musical facts plus the user's words.

    >>> build_prompt("energetic", stem="drums", style="rock", bpm=120)
    'rock drums, 120 bpm, energetic'
    """
    parts: list[str] = []
    if stem is not None:
        phrase = STEM_PHRASES[stem]
        parts.append(f"{style} {phrase}" if style else phrase)
    elif style:
        parts.append(style)
    if bpm is not None:
        parts.append(f"{bpm:.0f} bpm")
    if key is not None:
        parts.append(f"in {key}")
    if chords:
        parts.append("chords " + " ".join(chords))
    if stem is None:
        return ", ".join([prompt, *parts])
    parts.append(prompt)
    return ", ".join(parts)


def stem_seed(seed: int, stem: str) -> int:
    """A per-stem seed derived from the request seed (stable across processes and versions)."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def jobs_for(request: GenerationRequest) -> list[GenerationJob]:
    """The jobs a validated request turns into (its seed must be set)."""
    if request.seed is None:
        raise ValueError("jobs_for needs a request with a seed (parse_request assigns one)")
    base = GenerationJob(
        prompt=build_prompt(
            request.prompt, style=request.style, bpm=request.bpm, key=request.key,
            chords=request.chords,
        ),
        duration_s=request.duration_s,
        seed=request.seed,
        params=request.params,
        bpm=request.bpm,
        key=request.key,
        chords=request.chords,
        style=request.style,
        melody=request.melody,
        continuation=request.continuation,
        request_id=request.request_id,
    )
    if not request.stems:
        return [base]
    return [
        replace(
            base,
            prompt=build_prompt(
                request.prompt, stem=stem, style=request.style, bpm=request.bpm,
                key=request.key, chords=request.chords,
            ),
            seed=stem_seed(request.seed, stem),
            stem=stem,
        )
        for stem in request.stems
    ]


def mix(stems: Sequence[np.ndarray], *, peak: float = 0.95) -> np.ndarray:
    """Sum stems (channels × samples; mono spreads to the widest channel count), no clipping."""
    channels = max(s.shape[0] for s in stems)
    length = max(s.shape[1] for s in stems)
    out = np.zeros((channels, length), dtype=np.float32)
    for s in stems:
        out[:, : s.shape[1]] += np.broadcast_to(s, (channels, s.shape[1]))
    top = float(np.max(np.abs(out))) if out.size else 0.0
    if top > peak:
        out *= peak / top
    return out
