"""The Ray wrappers and the one-clip chain, on the real local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from functions import tasks
from functions.pipeline import ClipOptions, process_clip
from musicfn.errors import InvalidAudioError
from tests.support.signals import cadence, chord_progression, pattern

pytestmark = pytest.mark.ray
SR = 32_000


@ray.remote(**tasks.RETRY_POLICY)
def _crash_once(marker: str) -> str:
    """Kill the worker on the first attempt, succeed on the next (a worker crash)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed\n")
        os._exit(1)
    return "survived"


@ray.remote(**tasks.RETRY_POLICY)
def _bad_input(marker: str) -> None:
    """Record the attempt, then fail the way a function fails on bad input."""
    with open(marker, "a") as f:
        f.write("attempt\n")
    raise InvalidAudioError("bad clip", code="non_finite_samples")


def _clip() -> np.ndarray:
    drums = pattern(120, 8, SR, drums=True)
    chords = chord_progression(cadence(62, False) * 2, 1.0, SR)
    n = min(drums.shape[1], chords.shape[1])
    return (0.5 * drums[:, :n] + 0.4 * chords[:, :n]).astype(np.float32)


def test_wrappers_share_the_retry_policy() -> None:
    for remote in (
        tasks.normalize_task,
        tasks.analyze_task,
        tasks.encode_task,
        tasks.assemble_task,
        tasks.warm_up_task,
    ):
        options = remote._default_options
        assert options["retry_exceptions"] is False
        assert options["max_retries"] >= 1


def test_worker_crash_is_retried(ray_cluster: Any, tmp_path: Path) -> None:
    assert ray.get(_crash_once.remote(str(tmp_path / "marker"))) == "survived"


def test_bad_input_is_not_retried(ray_cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    with pytest.raises(InvalidAudioError):
        ray.get(_bad_input.remote(str(marker)))
    assert marker.read_text().count("attempt") == 1


def test_chain_matches_the_in_process_pipeline(ray_cluster: Any) -> None:
    tasks.warm_up_workers()
    audio = _clip()
    options = ClipOptions(preset="podcast", waveform_buckets=200)
    remote = tasks.process_clip_remote(audio, SR, options, timeout_s=300)
    local = process_clip(audio, SR, options)
    assert remote.encoding == local.encoding  # same bytes: the dither is seeded
    assert remote.audio == local.audio
    assert remote.loudness == local.loudness
    assert remote.analysis == local.analysis
    assert remote.loudness.after.integrated_lufs == pytest.approx(-16.0, abs=0.5)
    assert remote.analysis.tempo is not None
    assert remote.analysis.tempo.bpm == pytest.approx(120, rel=0.04)
    t = remote.timings
    assert min(t.normalize_s, t.analyze_s, t.encode_s) > 0
    assert t.total_s == pytest.approx(t.normalize_s + t.analyze_s + t.encode_s)
    sidecar = remote.sidecar()
    assert "audio" not in sidecar
    assert sidecar["encoding"]["sha256"] == remote.encoding.sha256


def test_chain_accepts_an_object_ref(ray_cluster: Any) -> None:
    ref = ray.put(_clip())
    clip = tasks.result(tasks.submit_clip(ref, SR), timeout_s=300)
    assert clip.encoding.frames == _clip().shape[1]


def test_a_short_clip_in_one_task_equals_the_chain(ray_cluster: Any) -> None:
    audio = _clip()
    assert audio.shape[1] < tasks.ONE_TASK_MAX_S * SR  # short enough for one task
    one = tasks.result(tasks.submit_clip(audio, SR), timeout_s=300)
    chain = tasks.result(tasks.submit_clip(ray.put(audio), SR), timeout_s=300)  # 4 tasks
    assert one.encoding == chain.encoding and one.audio == chain.audio
    assert one.loudness == chain.loudness and one.analysis == chain.analysis


def test_bad_clip_fails_at_once_with_the_typed_error(ray_cluster: Any) -> None:
    audio = _clip()
    audio[1, 100] = np.inf
    with pytest.raises(InvalidAudioError) as err:
        tasks.process_clip_remote(audio, SR, timeout_s=120)
    assert err.value.code == "non_finite_samples"


def test_warm_up_reaches_workers(ray_cluster: Any) -> None:
    pids = tasks.warm_up_workers(2)
    # One or two distinct worker processes (Ray may run both warm-ups in one), none of them
    # this driver, all still alive afterwards: the pool stays warm for the first real clip.
    assert len(pids) in (1, 2) and len(set(pids)) == len(pids)
    for pid in pids:
        assert isinstance(pid, int) and pid != os.getpid()
        os.kill(pid, 0)  # raises ProcessLookupError if the worker is gone
