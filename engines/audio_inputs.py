"""Reference audio a request may bring (a melody, or a prompt to continue): the one owner of
its limits.

Checked at submission (the ingress, from the file's header or a stored track's facts) and again
by ``engines.requests.AudioInput`` when the runner hands the decoded samples to the engine.
"""

from __future__ import annotations

import math
from typing import Literal

from musicfn.errors import InvalidRequestError, LimitExceededError

MAX_INPUT_AUDIO_S = 60.0
INPUT_CHANNELS = (1, 2)
MIN_INPUT_SAMPLE_RATE = 8000
MAX_INPUT_SAMPLE_RATE = 192_000
# MusicGen's single-pass window: a continuation prompt must be shorter than it (audiocraft
# encodes the prompt into the first window). Longer outputs slide ``extend_stride`` at a time.
MUSICGEN_WINDOW_S = 30.0

InputKind = Literal["melody", "continuation"]
INPUT_KINDS: tuple[InputKind, ...] = ("melody", "continuation")


def check_input_audio(kind: InputKind, *, duration_s: float, sample_rate: int, channels: int,
                      output_s: float) -> None:
    """Raise (naming ``kind``) for reference audio an engine cannot take: empty, longer than
    ``MAX_INPUT_AUDIO_S``, a rate or channel count out of range, or, for a continuation
    prompt, not shorter than the output (``output_s``) and MusicGen's window.

    Raises:
        LimitExceededError: too long (``input_audio_limit``).
        InvalidRequestError: empty, rate, channels, or a prompt too long to continue
            (``invalid_<kind>``).
    """
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise InvalidRequestError(f"{kind}: the audio is empty", code=f"invalid_{kind}")
    if duration_s > MAX_INPUT_AUDIO_S:
        raise LimitExceededError(f"{kind}: {duration_s:.2f} s of audio, over the limit of "
                                 f"{MAX_INPUT_AUDIO_S:g} s", code="input_audio_limit")
    if not MIN_INPUT_SAMPLE_RATE <= sample_rate <= MAX_INPUT_SAMPLE_RATE:
        raise InvalidRequestError(f"{kind}: sample rate {sample_rate} Hz is outside "
                                  f"{MIN_INPUT_SAMPLE_RATE}-{MAX_INPUT_SAMPLE_RATE} Hz",
                                  code=f"invalid_{kind}")
    if channels not in INPUT_CHANNELS:
        raise InvalidRequestError(f"{kind}: {channels} channels; mono or stereo only",
                                  code=f"invalid_{kind}")
    if kind == "continuation":
        window = min(output_s, MUSICGEN_WINDOW_S)
        if duration_s >= window:
            raise InvalidRequestError(
                f"continuation: the prompt ({duration_s:.2f} s) must be shorter than the "
                f"generated audio and the model window ({window:g} s)",
                code="invalid_continuation")
