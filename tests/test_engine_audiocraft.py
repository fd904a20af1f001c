"""The audiocraft engine in-process with the tiny random-weight MusicGen (real audiocraft)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engines.audiocraft_engine import AudiocraftEngine
from engines.base import GenerationJob
from engines.requests import AudioInput, GenerationParams
from engines.tiny_model import is_model_dir
from musicfn.errors import (
    ConfigurationError,
    InvalidRequestError,
    LimitExceededError,
    NoGpuError,
    UnsupportedError,
)
from tests.support.musicgen import tiny_model_dir

SR = 32_000


@pytest.fixture(scope="module")
def engine() -> Iterator[AudiocraftEngine]:
    yield AudiocraftEngine(str(tiny_model_dir()), device="cpu", max_duration_s=40.0)


def test_tiny_model_is_a_checkpoint_dir_loaded_by_get_pretrained(engine: AudiocraftEngine) -> None:
    assert is_model_dir(tiny_model_dir())
    info = engine.describe()
    assert (info.engine, info.device, info.dtype) == ("audiocraft", "cpu", "float32")
    assert info.model == "local:tiny-musicgen" and "audiocraft" in info.versions
    sup = engine.supports
    assert (sup.sample_rate, sup.channels, sup.melody, sup.continuation) == (SR, 1, False, True)


def test_batched_items_equal_their_solo_runs(engine: AudiocraftEngine) -> None:
    jobs = [GenerationJob(prompt=f"p{i % 3}", duration_s=0.6, seed=50 + i) for i in range(5)]
    together = engine.generate(jobs)
    assert [g.batch_size for g in together] == [5] * 5
    for job, got in zip(jobs, together, strict=True):
        np.testing.assert_array_equal(got.audio, engine.generate([job])[0].audio)


def test_jobs_with_different_params_run_in_separate_groups(engine: AudiocraftEngine) -> None:
    hot = GenerationParams(temperature=1.3, top_k=20)
    jobs = [
        GenerationJob(prompt="a", duration_s=0.5, seed=1),
        GenerationJob(prompt="a", duration_s=0.5, seed=1, params=hot),
        GenerationJob(prompt="a", duration_s=0.7, seed=1),
        GenerationJob(prompt="b", duration_s=0.5, seed=2),
    ]
    out = engine.generate(jobs)
    assert [g.batch_size for g in out] == [2, 1, 1, 2]
    assert [g.audio.shape[1] for g in out] == [16000, 16000, 22400, 16000]
    assert not np.array_equal(out[0].audio, out[1].audio)  # params really applied per group


def test_progress_is_reported_per_request_and_reaches_one(engine: AudiocraftEngine) -> None:
    seen: dict[str, list[float]] = {}

    def on_progress(ids: object, fraction: float) -> None:
        for rid in ids:  # type: ignore[attr-defined]
            seen.setdefault(rid, []).append(fraction)

    jobs = [GenerationJob(prompt="x", duration_s=0.5, seed=i, request_id=f"r{i}")
            for i in range(2)]
    engine.generate(jobs, on_progress)
    assert set(seen) == {"r0", "r1"}
    for fractions in seen.values():
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 10


@pytest.mark.slow
def test_long_form_beyond_the_model_window(engine: AudiocraftEngine) -> None:
    job = GenerationJob(prompt="x", duration_s=31.0, seed=3,
                        params=GenerationParams(extend_stride=25.0))
    (out,) = engine.generate([job])
    assert out.audio.shape == (1, 31 * SR)
    assert np.abs(out.audio[:, -SR:]).max() > 0  # the extension is audio, not padding


def test_continuation_and_limits(engine: AudiocraftEngine) -> None:
    prompt = AudioInput(samples=np.full((1, 8000), 0.05, dtype=np.float32), sample_rate=SR)
    (out,) = engine.generate([GenerationJob(prompt="x", duration_s=1.0, seed=1,
                                            continuation=prompt)])
    assert out.audio.shape == (1, SR)
    with pytest.raises(UnsupportedError):
        engine.validate(GenerationJob(prompt="x", duration_s=1.0, seed=1, melody=prompt))
    with pytest.raises(LimitExceededError):
        engine.validate(GenerationJob(prompt="x", duration_s=41.0, seed=1))
    with pytest.raises(InvalidRequestError):
        engine.validate(GenerationJob(prompt="x", duration_s=1.0, seed=1,
                                      params=GenerationParams(top_k=300)))


def test_health_check_runs_on_the_device(engine: AudiocraftEngine) -> None:
    engine.check_health()


def test_load_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        AudiocraftEngine(str(tmp_path))  # not a checkpoint dir, not a known id
    with pytest.raises(NoGpuError, match="cpu"):
        AudiocraftEngine(str(tiny_model_dir()), device="cuda")
