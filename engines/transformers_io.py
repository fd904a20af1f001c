"""Loading a transformers MusicGen and moving audio in and out of it, one job at a time.

Helpers of ``transformers_engine``: each job's prompt audio is encoded, its melody turned into
chroma and its codes decoded on their own (batched convolutions may round differently, and a
job's audio must not depend on its neighbours).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.requests import AudioInput

MODEL_TYPES = ("musicgen", "musicgen_melody")


def local_model_type(path: Path) -> str | None:
    """``model_type`` of a local transformers MusicGen dir (``musicgen``/``musicgen_melody``)."""
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return model_type if model_type in MODEL_TYPES else None


def load_musicgen(model: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, processor), the class chosen by ``model_type``."""
    import transformers

    hf: Any = transformers  # partly untyped: use it as Any
    model_type = hf.AutoConfig.from_pretrained(model).model_type
    cls: Any = (
        hf.MusicgenMelodyForConditionalGeneration
        if model_type == "musicgen_melody"
        else hf.MusicgenForConditionalGeneration
    )
    loaded = cls.from_pretrained(model, dtype=dtype).to(device).eval()
    return loaded, hf.AutoProcessor.from_pretrained(model)


def encode_prompt(model: Any, audio: AudioInput, channels: int) -> torch.Tensor:
    """One prompt's EnCodec codes, (1, codebooks, frames), at the model's rate.

    Mono models encode the channel mean; stereo models encode left and right (a mono prompt on
    both) and interleave their codebooks, as transformers' own audio-prompt path does.
    """
    codec = model.audio_encoder
    param = next(codec.parameters())
    wav = _resampled(audio, int(codec.config.sampling_rate)).to(param.device, param.dtype)
    if channels == 1:
        return _codes(codec, wav.mean(dim=0))
    left, right = (wav[0], wav[-1])
    codes_l, codes_r = _codes(codec, left), _codes(codec, right)
    out = codes_l.new_empty((1, 2 * codes_l.shape[1], codes_l.shape[2]))
    out[:, ::2], out[:, 1::2] = codes_l, codes_r
    return out


def _codes(codec: Any, wav: torch.Tensor) -> torch.Tensor:
    return codec.encode(wav[None, None, :], return_dict=True).audio_codes[0]  # type: ignore[no-any-return]


def decode(model: Any, codes: torch.Tensor, channels: int) -> torch.Tensor:
    """(1, codebooks, frames) -> (channels, samples); stereo codebooks interleave left/right."""
    codec = model.audio_encoder
    if channels == 1:
        return codec.decode(codes[None], audio_scales=[None]).audio_values[0]  # type: ignore[no-any-return]
    left = codec.decode(codes[None, :, ::2], audio_scales=[None]).audio_values[0]
    right = codec.decode(codes[None, :, 1::2], audio_scales=[None]).audio_values[0]
    return torch.cat([left, right], dim=0)


def chroma(model: Any, processor: Any, melody: AudioInput) -> torch.Tensor:
    """A melody's chroma, tiled to the model's chroma length (as the model would), (1, L, 12).

    Tiling here gives every melody the same shape, so melodies of any length share a batch.
    """
    mono = torch.from_numpy(melody.samples.mean(axis=0))
    feats = processor.feature_extractor(
        mono, sampling_rate=melody.sample_rate, return_tensors="pt"
    ).input_features
    length = int(model.config.chroma_length)
    feats = feats.repeat(1, math.ceil(length / feats.shape[1]), 1)[:, :length]
    param = next(model.parameters())
    return feats.to(param.device, param.dtype)  # type: ignore[no-any-return]


def to_numpy(audio: torch.Tensor, samples: int) -> np.ndarray:
    """Float32 (channels, ``samples``): trimmed, or padded with silence."""
    arr = audio.detach().float().cpu().numpy()
    if arr.shape[-1] >= samples:
        return np.ascontiguousarray(arr[:, :samples], dtype=np.float32)
    return np.pad(arr, ((0, 0), (0, samples - arr.shape[-1]))).astype(np.float32)


def _resampled(audio: AudioInput, sample_rate: int) -> torch.Tensor:
    wav = torch.from_numpy(audio.samples)
    if audio.sample_rate == sample_rate:
        return wav
    import torchaudio

    out: torch.Tensor = torchaudio.functional.resample(wav, audio.sample_rate, sample_rate)
    return out
