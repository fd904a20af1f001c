"""The engine interface every generator implements, and the job types that cross it.

A ``GenerationJob`` is one piece of audio to make (a whole request, or one stem of it). Engines
receive already-validated jobs in batches and return one ``GeneratedAudio`` per job, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engines.requests import AudioInput, GenerationParams
from musicfn.errors import (
    EngineError,
    InvalidRequestError,
    LimitExceededError,
    UnsupportedError,
)

# Called with (request ids of the jobs concerned, fraction done in [0, 1]).
ProgressCallback = Callable[[Sequence[str], float], None]


@dataclass(frozen=True)
class GenerationJob:
    """One audio to generate: a prompt, a duration, sampling params and a seed."""

    prompt: str
    duration_s: float
    seed: int
    params: GenerationParams = field(default_factory=GenerationParams)
    stem: str | None = None
    bpm: float | None = None
    key: str | None = None
    chords: tuple[str, ...] | None = None
    style: str | None = None
    melody: AudioInput | None = None
    continuation: AudioInput | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class GeneratedAudio:
    """Float32 audio (channels × samples) for one job, and how many jobs shared its batch."""

    audio: np.ndarray
    sample_rate: int
    batch_size: int = 1


@dataclass(frozen=True)
class EngineSupports:
    """What an engine can do; requests asking for more are rejected before generation."""

    melody: bool
    continuation: bool
    stereo: bool
    max_duration_s: float
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class EngineInfo:
    """Identity of a loaded engine, recorded with every result."""

    engine: str
    model: str
    device: str
    dtype: str
    versions: dict[str, str]


@runtime_checkable
class Engine(Protocol):
    """A loaded generator. Not thread-safe unless it says so: callers serialise ``generate``."""

    @property
    def supports(self) -> EngineSupports:
        """Capabilities and output format."""
        ...

    def describe(self) -> EngineInfo:
        """Engine, model, device, dtype and library versions."""
        ...

    def validate(self, job: GenerationJob) -> None:
        """Raise a musicfn ``InputError`` if this engine cannot run ``job`` (before batching)."""
        ...

    def generate(
        self, jobs: Sequence[GenerationJob], progress: ProgressCallback | None = None
    ) -> list[GeneratedAudio]:
        """Generate every job; the result list matches ``jobs`` one to one."""
        ...

    def check_health(self) -> None:
        """Run a tiny operation on the engine's device; raise ``EngineError`` if it fails."""
        ...


def group_indices(jobs: Sequence[GenerationJob], key: Callable[[GenerationJob], Hashable]) -> list[
    list[int]
]:
    """Indices of ``jobs`` grouped by ``key``, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(key(job), []).append(i)
    return list(groups.values())


def generate_grouped(
    jobs: Sequence[GenerationJob],
    key: Callable[[GenerationJob], Hashable],
    run_group: Callable[[list[GenerationJob]], Sequence[np.ndarray]],
    sample_rate: int,
) -> list[GeneratedAudio]:
    """Generate ``jobs`` group by group (``key`` equal within a group: params, conditioning
    shape), each group in one ``run_group`` call; results in the order of ``jobs``."""
    out: list[GeneratedAudio | None] = [None] * len(jobs)
    for idxs in group_indices(jobs, key):
        group = [jobs[i] for i in idxs]
        for i, audio in zip(idxs, run_group(group), strict=True):
            out[i] = GeneratedAudio(audio, sample_rate, len(group))
    return [g for g in out if g is not None]


def check_torch_device(device: Any) -> None:
    """A tiny computation on a torch ``device``; ``EngineError`` if it fails or is wrong."""
    import torch

    try:
        value = float((torch.ones(16, device=device) * 2).sum().item())
    except RuntimeError as exc:
        raise EngineError(f"device {device} failed a health op: {exc}") from exc
    if value != 32.0:
        raise EngineError(f"device {device} computed {value} for a 32.0 health op")


def check_musicgen_job(job: GenerationJob, *, model: str, melody: bool,
                       max_duration_s: float, window_s: float, codebook: int,
                       duration_note: str = "") -> None:
    """What every MusicGen engine checks before batching a job: melody support, its
    duration cap, a continuation shorter than ``window_s`` (what it continues into), and
    top_k within the codebook."""
    if job.melody is not None and not melody:
        raise UnsupportedError(
            f"model {model} has no melody conditioning; use a musicgen-melody model",
            code="melody_unsupported")
    if job.duration_s > max_duration_s:
        raise LimitExceededError(
            f"duration_s {job.duration_s:g} is over this engine's maximum of "
            f"{max_duration_s:g} s{duration_note}", code="duration_limit")
    if job.continuation is not None and job.continuation.duration_s >= window_s:
        raise InvalidRequestError(
            f"continuation audio ({job.continuation.duration_s:.2f} s) must be shorter "
            f"than the generated audio and the model window ({window_s:g} s)",
            code="invalid_continuation")
    if job.params.top_k > codebook:
        raise InvalidRequestError(
            f"top_k {job.params.top_k} exceeds this model's codebook size {codebook}",
            code="invalid_top_k")
