"""Ray remote wrappers for the audio functions, and the one-clip task chain.

Retry policy: a task is retried only when its worker dies (``max_retries``); an exception
raised by the function itself - bad input above all - is never retried
(``retry_exceptions=False``) and reaches the caller as the original ``MusicfnError``.

Priority: the tasks' work runs on a thread at the ``background_nice`` niceness
(``musicfn.priority``), so on a saturated node the front door is served first.

Warm workers: Ray reuses worker processes between tasks, so imports (scipy, pyloudnorm, soxr)
and cached filter banks are paid once per process. The functions do not use librosa's
numba-compiled code at all (see functions.filterbanks), so nothing is JIT-compiled per clip.
``warm_up_workers`` runs a small analysis on every CPU so the first real clip is warm.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayTaskError

from functions.audio import Audio
from functions.pipeline import (
    ClipOptions,
    assemble,
    process_clip,
    run_analyze,
    run_encode,
    run_normalize,
)
from functions.results import AnalysisResult, EncodeFacts, NormalizeReport, ProcessedClip
from musicfn.errors import original_error
from musicfn.logs import configure_json_logging_in_worker
from musicfn.priority import call_in_background

# Imported by every Ray worker that runs these tasks: their log lines become JSON (no-op in
# a driver).
configure_json_logging_in_worker()

# Clips shorter than this run the whole chain in one task (see ``submit_clip``).
ONE_TASK_MAX_S = 15.0
# Shared by every wrapper: retry worker crashes, never application errors.
RETRY_POLICY: dict[str, Any] = {"max_retries": 3, "retry_exceptions": False}


@ray.remote(num_returns=3, **RETRY_POLICY)
def normalize_task(
    audio: Audio, sample_rate: int, options: ClipOptions
) -> tuple[Audio, NormalizeReport, float]:
    """Remote ``run_normalize``: (normalised audio, report, seconds)."""
    return call_in_background(run_normalize, audio, sample_rate, options)


@ray.remote(num_returns=2, **RETRY_POLICY)
def analyze_task(
    audio: Audio, sample_rate: int, report: NormalizeReport | None, options: ClipOptions
) -> tuple[AnalysisResult, float]:
    """Remote ``run_analyze``: (analysis, seconds)."""
    return call_in_background(run_analyze, audio, sample_rate, report, options)


@ray.remote(num_returns=3, **RETRY_POLICY)
def encode_task(
    audio: Audio, sample_rate: int, options: ClipOptions
) -> tuple[bytes, EncodeFacts, float]:
    """Remote ``run_encode``: (bytes, facts, seconds)."""
    return call_in_background(run_encode, audio, sample_rate, options)


@ray.remote(**RETRY_POLICY)
def clip_task(audio: Audio, sample_rate: int, options: ClipOptions) -> ProcessedClip:
    """Remote ``process_clip``: the whole chain in one task (for short clips)."""
    return call_in_background(process_clip, audio, sample_rate, options)


@ray.remote(**RETRY_POLICY)
def assemble_task(
    report: NormalizeReport,
    normalize_s: float,
    analysis: AnalysisResult,
    analyze_s: float,
    data: bytes,
    facts: EncodeFacts,
    encode_s: float,
) -> ProcessedClip:
    """Remote ``assemble``: joins the chain's results into one ``ProcessedClip``."""
    return assemble(report, normalize_s, analysis, analyze_s, data, facts, encode_s)


@ray.remote(**RETRY_POLICY)
def warm_up_task() -> int:
    """Analyse six seconds of clicks so this worker has its imports and filter banks ready."""
    sample_rate = 22_050
    clicks = np.zeros((1, 6 * sample_rate), dtype=np.float32)
    clicks[0, :: sample_rate // 2] = 0.5
    run_analyze(clicks, sample_rate, None, ClipOptions())
    return os.getpid()


def warm_up_workers(count: int | None = None) -> set[int]:
    """Run one warm-up task per CPU (or ``count``) at once; returns the warmed worker pids."""
    if count is None:
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        count = max(1, int(resources.get("CPU", 1)))
    pids: list[int] = ray.get([warm_up_task.remote() for _ in range(count)])
    return set(pids)


def submit_clip(
    audio: Audio | ray.ObjectRef[Audio], sample_rate: int, options: ClipOptions | None = None
) -> ray.ObjectRef[ProcessedClip]:
    """Start the chain normalise -> (analyse | encode) -> assemble; returns a ref to the
    ``ProcessedClip``. Analysis and encoding both read the normalised audio from the object
    store and run in parallel. A clip in memory shorter than ``ONE_TASK_MAX_S`` runs the
    chain in one task instead: for it four tasks' overhead (submission, scheduling, the
    object store) costs more than the parallelism gains. ``await`` the ref, or pass it to
    ``result``."""
    options = options or ClipOptions()
    if not isinstance(audio, ray.ObjectRef) and audio.shape[-1] < ONE_TASK_MAX_S * sample_rate:
        short: ray.ObjectRef[ProcessedClip] = clip_task.remote(audio, sample_rate, options)
        return short
    audio_ref = audio if isinstance(audio, ray.ObjectRef) else ray.put(audio)
    # Multi-return tasks hand back one ref per value; Ray's stubs do not model that.
    stage1: Any = normalize_task.remote(audio_ref, sample_rate, options)
    normalized, report, normalize_s = stage1
    stage2: Any = analyze_task.remote(normalized, sample_rate, report, options)
    analysis, analyze_s = stage2
    stage3: Any = encode_task.remote(normalized, sample_rate, options)
    data, facts, encode_s = stage3
    ref: ray.ObjectRef[ProcessedClip] = assemble_task.remote(
        report, normalize_s, analysis, analyze_s, data, facts, encode_s
    )
    return ref


def result(ref: ray.ObjectRef[ProcessedClip], timeout_s: float | None = None) -> ProcessedClip:
    """Wait for a ``submit_clip`` ref; a function's ``MusicfnError`` is raised as itself."""
    try:
        clip: ProcessedClip = ray.get(ref, timeout=timeout_s)
    except RayTaskError as exc:
        raise original_error(exc) from None
    return clip


def process_clip_remote(
    audio: Audio,
    sample_rate: int,
    options: ClipOptions | None = None,
    timeout_s: float | None = None,
) -> ProcessedClip:
    """Run the chain for one clip on the cluster and wait for it."""
    return result(submit_clip(audio, sample_rate, options), timeout_s)
