"""Request validation, limits and stem prompt building (pure, no Ray)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from engines.requests import Limits, parse_request
from engines.stems import build_prompt, jobs_for, mix, stem_seed
from musicfn.errors import InvalidRequestError, LimitExceededError, MusicfnError

LIMITS = Limits(max_duration_s=30, max_prompt_chars=100, max_stems=3)


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        ({"prompt": "x", "duration_s": 0}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": -2}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": math.nan}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": "1e999"}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": 30.01}, LimitExceededError, "duration_limit"),
        ({"prompt": "", "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": "a\nb", "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": "é" * 101, "duration_s": 1}, LimitExceededError, "prompt_limit"),
        ({"prompt": "x" * 5000, "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": "x", "duration_s": 1, "model": "musicgen-xl"}, InvalidRequestError,
         "unknown_model"),
        ({"prompt": "x", "duration_s": 1, "stems": ["drums", "kazoo"]}, InvalidRequestError,
         "unknown_stem"),
        ({"prompt": "x", "duration_s": 1, "stems": []}, InvalidRequestError, "invalid_stems"),
        ({"prompt": "x", "duration_s": 3e-18}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": True}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": "2"}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": 1, "seed": True}, InvalidRequestError, "invalid_seed"),
        ({"prompt": "evil\u202etxt.exe", "duration_s": 1}, InvalidRequestError,
         "invalid_prompt"),
        ({"prompt": "x", "style": "a\u2067b", "duration_s": 1}, InvalidRequestError,
         "invalid_style"),
        ({"prompt": "x", "duration_s": 1, "stems": ["drums", "bass", "piano", "vocals"]},
         LimitExceededError, "stems_limit"),
        ({"prompt": "x", "duration_s": 1, "key": "H major"}, InvalidRequestError, "invalid_key"),
        ({"prompt": "x", "duration_s": 1, "chords": ["C", "Xm"]}, InvalidRequestError,
         "invalid_chords"),
        ({"prompt": "x", "duration_s": 1, "bpm": 1000}, InvalidRequestError, "invalid_bpm"),
        ({"prompt": "x", "duration_s": 1, "seed": -1}, InvalidRequestError, "invalid_seed"),
        ({"prompt": "x", "duration_s": 1, "params": {"top_p": 1.5}}, InvalidRequestError,
         "invalid_params"),
        ({"prompt": "x", "duration_s": 1, "surprise": True}, InvalidRequestError,
         "invalid_surprise"),
        ({"prompt": "x", "duration_s": 1,
          "melody": {"samples": [[math.nan]], "sample_rate": 32000}}, InvalidRequestError,
         "invalid_melody"),
        ("not a mapping", InvalidRequestError, "invalid_request"),
    ],
)
def test_bad_requests_raise_typed_errors(data: Any, error: type[MusicfnError], code: str) -> None:
    with pytest.raises(error) as info:
        parse_request(data, LIMITS)
    assert info.value.code == code


def test_valid_request_is_normalised_and_seeded() -> None:
    req = parse_request(
        {"prompt": "  chill  ", "duration_s": 2, "stems": ["pad", "drums"], "key": "bb",
         "chords": ["Bb", "Gm7"]},
        LIMITS,
    )
    assert req.prompt == "chill"
    assert req.stems == ("synth", "drums")
    merged = parse_request({"prompt": "x", "duration_s": 2, "stems": ["pad", "drums", "synth"]},
                           LIMITS)
    assert merged.stems == ("synth", "drums")  # an alias and its stem are one stem
    assert req.key == "A# major" and req.chords == ("A#", "Gm7")
    assert req.seed is not None and 0 <= req.seed < 2**31


def test_stem_prompts_and_seeds() -> None:
    assert build_prompt("energetic", stem="drums", style="rock", bpm=120) == (
        "rock drums, 120 bpm, energetic"
    )
    assert build_prompt("lofi beat", bpm=90, key="C major") == "lofi beat, 90 bpm, in C major"
    req = parse_request({"prompt": "calm", "duration_s": 1, "seed": 5,
                         "stems": ["bass", "piano"]}, LIMITS)
    jobs = jobs_for(req)
    assert [j.stem for j in jobs] == ["bass", "piano"]
    assert [j.prompt for j in jobs] == ["bass line, calm", "piano, calm"]
    assert [j.seed for j in jobs] == [stem_seed(5, "bass"), stem_seed(5, "piano")]
    assert stem_seed(5, "bass") == stem_seed(5, "bass") != stem_seed(6, "bass")


def test_mix_never_clips() -> None:
    loud = np.ones((2, 10), dtype=np.float32)
    out = mix([loud, np.ones((1, 10), dtype=np.float32)])
    assert out.shape == (2, 10) and float(np.abs(out).max()) == pytest.approx(0.95)
