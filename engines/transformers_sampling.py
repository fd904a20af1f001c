"""Per-job seeded sampling and step recording for transformers' MusicGen ``generate``.

transformers draws every batch row's next token with one ``torch.multinomial`` on the global RNG,
so a row's audio would depend on its batch. The engine therefore runs ``generate`` greedily
(``do_sample=False``) and appends ``SeededSampler`` as the last logits processor: it applies
temperature and top-k / top-p itself, samples each job's rows with that job's own
``torch.Generator`` (the exponential race, argmax p_i / E_i with E_i ~ Exp(1), as in
``engines.seeding``) and applies classifier-free guidance with the job's ``cfg_coef`` (the
engine asks transformers for guidance only to get the unconditional half of the batch), and
returns scores that are 0 at the sampled token and -inf elsewhere, so
the greedy argmax picks exactly that token. Each job consumes a fixed amount of randomness per
step (one Exp(1) per codebook and vocabulary entry), so it gets the same tokens alone or batched.

``StepRecorder`` is a stopping criterion that never stops: it keeps the latest token matrix
(transformers returns only decoded audio) and reports progress once per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from engines.requests import GenerationParams
from musicfn.errors import EngineError


class SeededSampler(LogitsProcessor):  # type: ignore[misc]
    """Sample each job's ``num_codebooks`` rows from its own generator; one-hot the choice."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        num_codebooks: int,
        params: GenerationParams,
    ) -> None:
        self._generators = list(generators)
        self._codebooks = num_codebooks
        self._params = params

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The next-token scores: 0 at each row's sampled token, -inf elsewhere."""
        rows, card = scores.shape
        want = len(self._generators) * self._codebooks
        if rows not in (want, 2 * want):
            raise EngineError(
                f"seeded sampling expected {len(self._generators)} jobs × {self._codebooks} "
                f"codebooks of scores, got {rows} rows",
                code="sampling_mismatch",
            )
        params = self._params
        logits = scores.float()
        if rows == 2 * want:
            # Guide here with the job's own coefficient (any value, also below 1): transformers'
            # guidance step runs after this processor, and only to double the batch.
            cond, uncond = logits[:want], logits[want:]
            logits = uncond + (cond - uncond) * params.cfg_coef
        if params.temperature <= 0.0:
            choice = torch.argmax(logits, dim=-1, keepdim=True)  # greedy
        else:
            probs = _filtered_probs(logits / params.temperature, params)
            noise = torch.cat(
                [
                    torch.empty((self._codebooks, card), dtype=torch.float32, device=scores.device)
                    .exponential_(generator=g)
                    for g in self._generators
                ]
            )
            choice = torch.argmax(probs / noise, dim=-1, keepdim=True)
        out = torch.full((want, card), float("-inf"), dtype=scores.dtype, device=scores.device)
        out.scatter_(1, choice, 0.0)
        if rows == 2 * want:
            # Guidance then computes 0 + (out - 0) * scale: 0 at the choice, -inf elsewhere.
            out = torch.cat([out, torch.zeros_like(out)])
        return out


def _filtered_probs(logits: torch.Tensor, params: GenerationParams) -> torch.Tensor:
    """Softmax of ``logits`` restricted like audiocraft: top-p when set, else top-k when set."""
    probs = torch.softmax(logits, dim=-1)
    if params.top_p > 0.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs > params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    elif params.top_k > 0:
        kth = torch.topk(probs, min(params.top_k, probs.shape[-1]), dim=-1).values[..., -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


class StepRecorder(StoppingCriteria):  # type: ignore[misc]
    """Never stops generation; remembers the token matrix and reports the fraction done."""

    def __init__(
        self, start_length: int, max_length: int, on_step: Callable[[float], None] | None
    ) -> None:
        self._start = start_length
        self._span = max(1, max_length - start_length)
        self._on_step = on_step
        self.ids: torch.Tensor | None = None

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        """Record ``input_ids``; return "not done" for every row."""
        self.ids = input_ids
        if self._on_step is not None:
            self._on_step(min(1.0, (input_ids.shape[-1] - self._start) / self._span))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def undelay(ids: torch.Tensor, num_codebooks: int, channels: int, frames: int) -> torch.Tensor:
    """(jobs × codebooks, length) tokens in MusicGen's delay pattern -> (jobs, codebooks, frames).

    Codebook *k* is delayed by ``k // channels`` steps after the start token (stereo models
    interleave left/right codebooks, which share a delay).
    """
    grid = ids.reshape(-1, num_codebooks, ids.shape[-1])
    rows = [
        grid[:, k, 1 + k // channels : 1 + k // channels + frames] for k in range(num_codebooks)
    ]
    out = torch.stack(rows, dim=1)
    if out.shape[-1] != frames:
        raise EngineError(
            f"generation produced {out.shape[-1]} frames, {frames} expected", code="short_output"
        )
    return out


def keep_first_step_conditioning(model: Any) -> None:
    """Work around transformers 4.57's MusicGen-Melody dropping all conditioning in ``generate``.

    ``generate`` now creates the KV cache before the first step, and MusicGen-Melody's
    ``prepare_inputs_for_generation`` drops ``encoder_hidden_states`` (text + chroma prefix)
    whenever a cache object exists, so the first step never sees the conditioning: text, melody
    and guidance are silently ignored (huggingface/transformers#45647, fixed upstream by #48679
    with the same rule as here: pass the prefix while the cache is still empty). Idempotent, and
    harmless on fixed versions.
    """
    original = model.prepare_inputs_for_generation
    if getattr(original, "_musicfn_keeps_conditioning", False):
        return

    def prepare(*args: Any, **kwargs: Any) -> Any:
        inputs = original(*args, **kwargs)
        cache = kwargs.get("past_key_values")
        if cache is None or cache.get_seq_length() == 0:
            inputs["encoder_hidden_states"] = kwargs.get("encoder_hidden_states")
        return inputs

    prepare._musicfn_keeps_conditioning = True  # type: ignore[attr-defined]
    model.prepare_inputs_for_generation = prepare
