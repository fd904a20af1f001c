"""Reference audio of a generation (melody or continuation prompt): checked and stored at
submission, read back by the runner.

The job payload names the audio (a stored track, or an upload under ``inputs/``) with its
sha256; it never carries samples. Checks use the one owner of the limits,
``engines.audio_inputs``.
"""

from __future__ import annotations

from engines.audio_inputs import MAX_INPUT_AUDIO_S, InputKind, check_input_audio
from engines.requests import AudioInput
from functions.decode import DecodedAudio, DecodeLimits, decode_audio
from functions.encode import EncodeOptions, encode
from musicfn.errors import ConflictError, InvalidRequestError, MusicfnError
from storage.inputs import put_input, read_input
from storage.objects import ObjectStore
from storage.sidecar import InputRef, Inputs, Sidecar

# The stored copy of an upload: the decoded samples exactly (32-bit float WAV).
_STORED = EncodeOptions(format="wav", subtype="FLOAT", dither=False)


def decode_input(data: bytes, kind: InputKind, *, output_s: float,
                 max_bytes: int) -> DecodedAudio:
    """Decode uploaded reference audio and check it (size, duration, rate, channels); the
    error names ``kind``."""
    try:
        decoded = decode_audio(data, DecodeLimits(max_bytes=max_bytes,
                                                  max_duration_s=MAX_INPUT_AUDIO_S))
    except MusicfnError as exc:  # the same code as a stored track over the limit
        code = "input_audio_limit" if exc.code == "too_long" else exc.code
        raise type(exc)(f"{kind}: {exc.message}", code=code) from None
    info = decoded.info
    check_input_audio(kind, duration_s=info.duration_s, sample_rate=decoded.sample_rate,
                      channels=info.channels, output_s=output_s)
    return decoded


def upload_input(objects: ObjectStore, data: bytes, kind: InputKind, *, output_s: float,
                 max_bytes: int) -> InputRef:
    """Check an uploaded file and store its samples under ``inputs/``; the reference."""
    decoded = decode_input(data, kind, output_s=output_s, max_bytes=max_bytes)
    wav, facts = encode(decoded.audio, decoded.sample_rate, _STORED)
    key, digest = put_input(objects, wav)
    return InputRef(key=key, sha256=digest, duration_s=facts.duration_s,
                    sample_rate=facts.sample_rate, channels=facts.channels)


def track_input(track: Sidecar, kind: InputKind, *, output_s: float) -> InputRef:
    """The reference to a stored track's audio: ConflictError (409 ``track_not_ready``) until
    it is completed; the same checks as an upload, from its recorded facts."""
    audio = track.audio
    if track.status != "completed" or audio is None or track.audio_key is None:
        raise ConflictError(f"{kind}.track_id: track {track.id} has no audio (it is "
                            f"{track.status})", code="track_not_ready")
    check_input_audio(kind, duration_s=audio.duration_s, sample_rate=audio.sample_rate,
                      channels=audio.channels, output_s=output_s)
    return InputRef(track_id=track.id, key=track.audio_key, sha256=audio.sha256,
                    duration_s=audio.duration_s, sample_rate=audio.sample_rate,
                    channels=audio.channels)


def load_inputs(objects: ObjectStore, inputs: Inputs) -> dict[str, AudioInput]:
    """The engine's audio for each reference (bytes checked against their sha256)."""
    out: dict[str, AudioInput] = {}
    for kind, ref in inputs.refs().items():
        data = read_input(objects, ref.key, ref.sha256)
        decoded = decode_audio(data, DecodeLimits(max_bytes=len(data) + 1,
                                                  max_duration_s=MAX_INPUT_AUDIO_S))
        try:
            out[kind] = AudioInput(samples=decoded.audio, sample_rate=decoded.sample_rate)
        except ValueError as exc:  # pydantic's ValidationError: checked at submission
            raise InvalidRequestError(f"{kind}: {exc}", code=f"invalid_{kind}") from None
    return out
