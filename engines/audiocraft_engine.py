"""The default engine: Meta's MusicGen through audiocraft.

One ``MusicGen`` per process. audiocraft keeps generation params on the model object, so every
call to ``generate`` splits its jobs into groups with identical params (and identical conditioning
shape) and runs the groups one after another under a lock. Each job samples from its own seeded
generator (see ``seeding``) and is decoded on its own, so its audio does not depend on its batch.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import seeding
from engines.base import (
    EngineInfo,
    EngineSupports,
    GeneratedAudio,
    GenerationJob,
    ProgressCallback,
    check_musicgen_job,
    check_torch_device,
    generate_grouped,
)
from engines.progress import WindowProgress, window_token_counts
from engines.requests import KNOWN_MODELS, served_name
from engines.tiny_model import is_model_dir
from musicfn.errors import (
    ConfigurationError,
    EngineError,
    EngineOverloadedError,
    InvalidRequestError,
    MusicfnError,
    NoGpuError,
)

log = logging.getLogger(__name__)

ENGINE_NAME = "audiocraft"


def model_label(name_or_dir: str) -> str:
    """How a model is named in results: its HF id, or ``local:<dir name>`` for a checkpoint dir."""
    return served_name("audiocraft", name_or_dir)


class AudiocraftEngine:
    """MusicGen loaded once, as ``MusicGen.get_pretrained(name_or_local_dir, device)`` loads it
    but without its throw-away random initialisation (``engines.fast_load``).

    fp16 on CUDA (audiocraft's loader picks float16 weights + autocast there), float32 on CPU.
    ``max_duration_s`` caps long-form generation, which goes beyond the model's single-pass
    window (30 s) by sliding ``extend_stride`` seconds at a time.
    """

    def __init__(self, model: str, *, device: str = "cpu", max_duration_s: float = 120.0) -> None:
        if model not in KNOWN_MODELS and not is_model_dir(Path(model)):
            raise ConfigurationError(
                f"model {model!r} is neither a known MusicGen id ({', '.join(KNOWN_MODELS)}) nor "
                "a directory with state_dict.bin and compression_state_dict.bin",
                code="unknown_model",
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise NoGpuError(
                f"device {device!r} requested but this process sees no CUDA GPU; "
                "use device 'cpu' (musicfn --device cpu)"
            )
        from engines.fast_load import load_musicgen

        seeding.install()
        try:
            self._model = load_musicgen(model, device=device)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise EngineError(f"could not load {model!r}: {exc}", code="model_load_failed") from exc
        self._label = model_label(model)
        self._device = torch.device(device)
        self._lock = threading.Lock()
        lm = self._model.lm
        self._card = int(lm.card)
        self._has_melody = "self_wav" in lm.condition_provider.conditioners
        self._supports = EngineSupports(
            melody=self._has_melody,
            continuation=True,
            stereo=self._model.audio_channels == 2,
            max_duration_s=float(max_duration_s),
            sample_rate=int(self._model.sample_rate),
            channels=int(self._model.audio_channels),
        )

    @property
    def supports(self) -> EngineSupports:
        """Capabilities of the loaded model."""
        return self._supports

    def describe(self) -> EngineInfo:
        """Engine, model, device, weight dtype and library versions."""
        import audiocraft

        dtype = next(iter(self._model.lm.parameters())).dtype
        return EngineInfo(
            engine=ENGINE_NAME,
            model=self._label,
            device=str(self._device),
            dtype=str(dtype).removeprefix("torch."),
            versions={"torch": torch.__version__, "audiocraft": audiocraft.__version__},
        )

    def validate(self, job: GenerationJob) -> None:
        """Reject jobs this model cannot run, before they are batched."""
        check_musicgen_job(job, model=self._label, melody=self._has_melody,
                           max_duration_s=self._supports.max_duration_s,
                           window_s=min(job.duration_s, self._model.max_duration),
                           codebook=self._card)
        if job.params.extend_stride >= self._model.max_duration:
            raise InvalidRequestError(
                f"extend_stride must be below {self._model.max_duration:g} s",
                code="invalid_extend_stride",
            )

    def generate(
        self, jobs: Sequence[GenerationJob], progress: ProgressCallback | None = None
    ) -> list[GeneratedAudio]:
        """Generate ``jobs`` group by group (identical params and conditioning shape per group)."""
        return generate_grouped(jobs, self._batch_key,
                                lambda group: self._generate_group(group, progress),
                                self._supports.sample_rate)

    def check_health(self) -> None:
        """A tiny computation on the model's device."""
        check_torch_device(self._device)

    # -- internals ----------------------------------------------------------------------------

    def _batch_key(self, job: GenerationJob) -> Hashable:
        mode: tuple[Any, ...] = ("text",)
        if job.melody is not None:
            mode = ("melody", job.melody.sample_rate)
        elif job.continuation is not None:
            mode = ("continuation", job.continuation.sample_rate, job.continuation.samples.shape)
        # Conditioning tokens of different lengths are padded in a batch (and the padding is
        # attended to), so only prompts of equal token length may share a batch.
        return (job.duration_s, job.params, mode, self._condition_length(job.prompt))

    def _condition_length(self, prompt: str) -> int:
        conditioners = self._model.lm.condition_provider.conditioners
        if "description" not in conditioners:
            return 0
        tokens = conditioners["description"].tokenize([prompt])
        mask = tokens["attention_mask"] if isinstance(tokens, dict) else tokens[1]
        return int(mask.shape[-1])

    def _generate_group(
        self, group: Sequence[GenerationJob], progress: ProgressCallback | None
    ) -> list[np.ndarray]:
        with self._lock, torch.inference_mode():
            try:
                return self._run_group(group, progress)
            except torch.cuda.OutOfMemoryError as exc:
                self._free_device_memory()
                raise EngineOverloadedError(
                    f"out of GPU memory generating {len(group)} × {group[0].duration_s:g} s; "
                    "retry later or with a shorter duration",
                    code="out_of_memory",
                ) from exc
            except MusicfnError:
                raise
            except (RuntimeError, ValueError, AssertionError) as exc:
                raise EngineError(f"audiocraft generation failed: {exc}") from exc
            finally:
                self._model.set_custom_progress_callback(None)

    def _run_group(
        self, group: Sequence[GenerationJob], progress: ProgressCallback | None
    ) -> list[np.ndarray]:
        model = self._model
        first = group[0]
        params = first.params
        frame_rate = float(model.frame_rate)
        sample_rate = self._supports.sample_rate
        # Generate whole frames covering the request, then trim to the exact sample count.
        frames = math.ceil(first.duration_s * frame_rate - 1e-9)
        model.set_generation_params(
            use_sampling=params.temperature > 0,
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            duration=frames / frame_rate,
            cfg_coef=params.cfg_coef,
            extend_stride=params.extend_stride,
        )
        ids = [j.request_id for j in group if j.request_id is not None]
        # audiocraft prints to stdout when progress is on without a callback: only turn it on
        # when someone listens.
        report = progress is not None and bool(ids)
        if report and progress is not None:
            prompt_frames = 0 if first.continuation is None else math.ceil(
                first.continuation.duration_s * frame_rate)
            # One fraction over every window (long form re-generates overlaps, see progress).
            tracker = WindowProgress(window_token_counts(
                frames, int(model.max_duration * frame_rate),
                int(frame_rate * params.extend_stride), prompt_frames))

            def on_tokens(generated: int, to_generate: int) -> None:
                progress(ids, tracker.update(generated, to_generate))

            model.set_custom_progress_callback(on_tokens)
        else:
            model.set_custom_progress_callback(None)

        descriptions = [j.prompt for j in group]
        generators = [
            torch.Generator(device=self._device).manual_seed(j.seed) for j in group
        ]
        with seeding.item_generators(generators):
            if first.melody is not None:
                melodies = [torch.from_numpy(j.melody.samples) for j in group if j.melody]
                batch_audio, tokens = model.generate_with_chroma(
                    descriptions, melodies, first.melody.sample_rate,
                    progress=report, return_tokens=True,
                )
            elif first.continuation is not None:
                prompt = torch.stack(
                    [torch.from_numpy(j.continuation.samples) for j in group if j.continuation]
                )
                batch_audio, tokens = model.generate_continuation(
                    prompt, first.continuation.sample_rate, descriptions,
                    progress=report, return_tokens=True,
                )
            else:
                batch_audio, tokens = model.generate(
                    descriptions, progress=report, return_tokens=True
                )
        want = round(first.duration_s * sample_rate)
        if len(group) == 1:
            audios = [batch_audio[0]]
        else:
            # Decode each item alone: batched convolutions may round differently, and an item's
            # audio must not depend on its neighbours.
            del batch_audio
            audios = [model.generate_audio(tokens[i : i + 1])[0] for i in range(len(group))]
        del tokens
        result = [_to_numpy(a, want) for a in audios]
        del audios
        if report and progress is not None:
            progress(ids, 1.0)
        return result

    def _free_device_memory(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _to_numpy(audio: torch.Tensor, samples: int) -> np.ndarray:
    arr = audio.detach().float().cpu().numpy()
    if arr.shape[-1] >= samples:
        return np.ascontiguousarray(arr[:, :samples], dtype=np.float32)
    log.warning("generated %d samples, %d requested: padding with silence", arr.shape[-1], samples)
    return np.pad(arr, ((0, 0), (0, samples - arr.shape[-1]))).astype(np.float32)
