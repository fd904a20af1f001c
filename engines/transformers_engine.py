"""MusicGen through Hugging Face transformers (``engine: transformers``).

``MusicgenForConditionalGeneration`` (text, or text + audio to continue) and
``MusicgenMelodyForConditionalGeneration`` (text + melody chroma), loaded with
``from_pretrained`` from an HF id (``facebook/musicgen-*``, the repos hold transformers weights
beside audiocraft's) or a local ``save_pretrained`` directory; the class follows
``config.json``'s ``model_type``. Jobs are grouped like the audiocraft engine (equal params,
duration, conditioning mode and padded text length), each job samples from its own seeded
generator (``transformers_sampling``) and is decoded on its own, so its audio does not depend on
its batch. One pass per job: no long-form windowing, so durations stop at the 30 s window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from engines.requests import KNOWN_MODELS, served_name
from engines.transformers_io import (
    chroma,
    decode,
    encode_prompt,
    load_musicgen,
    local_model_type,
    to_numpy,
)
from engines.transformers_sampling import (
    SeededSampler,
    StepRecorder,
    keep_first_step_conditioning,
    undelay,
)
from musicfn.errors import (
    ConfigurationError,
    EngineError,
    EngineOverloadedError,
    MusicfnError,
    NoGpuError,
)

ENGINE_NAME = "transformers"
# Results name this engine's models "transformers:<HF id>" or "transformers:local:<dir name>".
LABEL_PREFIX = f"{ENGINE_NAME}:"
# MusicGen's training window; transformers has no long-form windowing, so this is the cap.
MODEL_WINDOW_S = 30.0
# Text tokens are padded to a multiple of this (masked in cross-attention), so prompts of
# similar length share a batch. The melody model attends to padding: there it is exact length.
TEXT_PAD_MULTIPLE = 16
# A guidance scale that only switches on transformers' conditional + unconditional batch.
_DOUBLE_BATCH = 2.0


def model_label(name_or_dir: str) -> str:
    """How a model is named in results: ``transformers:<HF id>`` or ``transformers:local:<dir>``."""
    return served_name(ENGINE_NAME, name_or_dir)


class TransformersEngine:
    """A transformers MusicGen loaded once; float16 on CUDA, float32 on CPU."""

    def __init__(self, model: str, *, device: str = "cpu", max_duration_s: float = 120.0) -> None:
        # The request-facing name ("transformers:facebook/musicgen-small") loads its HF id.
        model = model.removeprefix(LABEL_PREFIX)
        if model not in KNOWN_MODELS and local_model_type(Path(model)) is None:
            raise ConfigurationError(
                f"model {model!r} is neither a known MusicGen id ({', '.join(KNOWN_MODELS)}) nor "
                "a transformers MusicGen directory (config.json with model_type musicgen or "
                "musicgen_melody)",
                code="unknown_model",
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise NoGpuError(
                f"device {device!r} requested but this process sees no CUDA GPU; "
                "use device 'cpu' (musicfn --device cpu)"
            )
        self._device = torch.device(device)
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self._label = model_label(model)
        self._lock = threading.Lock()
        try:
            self._model, self._processor = load_musicgen(model, self._device, self._dtype)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise EngineError(f"could not load {model!r}: {exc}", code="model_load_failed") from exc
        decoder = self._model.decoder.config
        audio = self._model.config.audio_encoder
        self._melody = self._model.config.model_type == "musicgen_melody"
        if self._melody:
            keep_first_step_conditioning(self._model)
        self._card = int(decoder.vocab_size)
        self._num_codebooks = int(decoder.num_codebooks)
        self._channels = int(decoder.audio_channels)
        self._frame_rate = float(audio.frame_rate)
        self._supports = EngineSupports(
            melody=self._melody,
            continuation=True,
            stereo=self._channels == 2,
            max_duration_s=float(min(max_duration_s, MODEL_WINDOW_S)),
            sample_rate=int(audio.sampling_rate),
            channels=self._channels,
        )

    @property
    def supports(self) -> EngineSupports:
        """Capabilities of the loaded model (no long form: capped at the 30 s window)."""
        return self._supports

    def describe(self) -> EngineInfo:
        """Engine, model, device, weight dtype and library versions."""
        import transformers

        return EngineInfo(
            engine=ENGINE_NAME,
            model=self._label,
            device=str(self._device),
            dtype=str(self._dtype).removeprefix("torch."),
            versions={"torch": torch.__version__, "transformers": transformers.__version__},
        )

    def validate(self, job: GenerationJob) -> None:
        """Reject jobs this model cannot run, before they are batched."""
        check_musicgen_job(job, model=self._label, melody=self._melody,
                           max_duration_s=self._supports.max_duration_s,
                           window_s=job.duration_s, codebook=self._card,
                           duration_note=" (transformers has no long-form generation)")

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
            mode = ("melody",)  # chroma is tiled to the model's fixed chroma length per job
        elif job.continuation is not None:
            mode = ("continuation", job.continuation.sample_rate, job.continuation.samples.shape)
        return (job.duration_s, job.params, mode, self._text_length(job.prompt))

    def _text_length(self, prompt: str) -> int:
        n = len(self._processor.tokenizer(prompt).input_ids)
        multiple = 1 if self._melody else TEXT_PAD_MULTIPLE
        return multiple * math.ceil(n / multiple)

    def _generate_group(
        self, group: Sequence[GenerationJob], progress: ProgressCallback | None
    ) -> list[np.ndarray]:
        with self._lock, torch.inference_mode():
            try:
                return self._run_group(group, progress)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise EngineOverloadedError(
                    f"out of GPU memory generating {len(group)} × {group[0].duration_s:g} s; "
                    "retry later or with a shorter duration",
                    code="out_of_memory",
                ) from exc
            except MusicfnError:
                raise
            except (RuntimeError, ValueError, IndexError) as exc:
                raise EngineError(f"transformers generation failed: {exc}") from exc

    def _run_group(
        self, group: Sequence[GenerationJob], progress: ProgressCallback | None
    ) -> list[np.ndarray]:
        import transformers

        hf: Any = transformers  # partly untyped: use it as Any

        first = group[0]
        frames = math.ceil(first.duration_s * self._frame_rate - 1e-9)
        max_length = frames + self._num_codebooks  # start token + delay pattern
        text = self._processor.tokenizer(
            [j.prompt for j in group], padding=True, return_tensors="pt",
            pad_to_multiple_of=None if self._melody else TEXT_PAD_MULTIPLE,
        ).to(self._device)
        start = self._start_ids(group)
        kwargs: dict[str, Any] = {"input_ids": text.input_ids,
                                  "attention_mask": text.attention_mask,
                                  "decoder_input_ids": start}
        if first.melody is not None:
            kwargs["input_features"] = torch.cat(
                [chroma(self._model, self._processor, j.melody) for j in group if j.melody]
            )
        ids = [j.request_id for j in group if j.request_id is not None]
        report = progress if progress is not None and ids else None
        recorder = StepRecorder(
            start.shape[-1], max_length, None if report is None else (lambda f: report(ids, f))
        )
        base = self._model.generation_config
        params = first.params
        config = hf.GenerationConfig(
            bos_token_id=base.bos_token_id, pad_token_id=base.pad_token_id,
            decoder_start_token_id=base.decoder_start_token_id, do_sample=False, num_beams=1,
            # Any scale > 1 makes transformers add the unconditional half; SeededSampler then
            # guides with the job's cfg_coef (transformers itself refuses scales <= 1).
            guidance_scale=None if params.cfg_coef == 1.0 else _DOUBLE_BATCH,
            max_length=max_length, use_cache=True,
        )
        generators = [torch.Generator(device=self._device).manual_seed(j.seed) for j in group]
        sampler = SeededSampler(generators, self._num_codebooks, params)
        self._model.generate(
            **kwargs, generation_config=config,
            logits_processor=hf.LogitsProcessorList([sampler]),
            stopping_criteria=hf.StoppingCriteriaList([recorder]),
        )
        if recorder.ids is None:
            raise EngineError("transformers generate produced no tokens", code="no_output")
        _, pattern = self._model.decoder.build_delay_pattern_mask(
            start, pad_token_id=base.decoder_start_token_id, max_length=max_length
        )
        tokens = self._model.decoder.apply_delay_pattern_mask(recorder.ids, pattern)
        codes = undelay(tokens, self._num_codebooks, self._channels, frames)
        want = round(first.duration_s * self._supports.sample_rate)
        result = [to_numpy(decode(self._model, codes[i : i + 1], self._channels), want)
                  for i in range(len(group))]
        if report is not None:
            report(ids, 1.0)
        return result

    def _start_ids(self, group: Sequence[GenerationJob]) -> torch.Tensor:
        """Start token (+ the encoded continuation prompt), (jobs × codebooks, length)."""
        start_token = int(self._model.generation_config.decoder_start_token_id)
        rows = len(group) * self._num_codebooks
        bos = torch.full((rows, 1), start_token, dtype=torch.long, device=self._device)
        if group[0].continuation is None:
            return bos
        codes = torch.cat([encode_prompt(self._model, j.continuation, self._channels)
                           for j in group if j.continuation])
        return torch.cat([bos, codes.reshape(rows, -1)], dim=-1)
