"""The transformers engine in-process with tiny random-weight MusicGen and MusicGen-Melody
(real transformers, loaded through ``from_pretrained(local_dir)``; CPU only, nothing downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from engines.base import GenerationJob
from engines.loader import load_engine, parse_spec
from engines.requests import AudioInput, GenerationParams, GenerationRequest
from engines.stems import jobs_for, mix
from engines.tiny_transformers import make_tiny_transformers_model
from engines.transformers_engine import TransformersEngine
from engines.transformers_io import local_model_type
from engines.transformers_sampling import SeededSampler
from musicfn.errors import (
    ConfigurationError,
    InvalidRequestError,
    LimitExceededError,
    NoGpuError,
    UnsupportedError,
)

SR = 32_000
DUR = 0.3  # 15 frames at 50 frames/s: 0.3 s = 9600 samples


def _tone(hz: float, seconds: float, sr: int) -> AudioInput:
    t = np.arange(int(seconds * sr)) / sr
    return AudioInput(samples=(0.3 * np.sin(2 * np.pi * hz * t))[None].astype(np.float32),
                      sample_rate=sr)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_transformers_model(tmp_path_factory.mktemp("hf") / "tiny-musicgen-hf", seed=7)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[TransformersEngine]:
    spec = parse_spec({"engine": "transformers", "model": str(model_dir), "device": "cpu",
                       "max_duration_s": 120.0})
    loaded = load_engine(spec)
    assert isinstance(loaded, TransformersEngine)
    yield loaded


@pytest.fixture(scope="module")
def melody_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersEngine]:
    root = tmp_path_factory.mktemp("hf-melody")
    path = make_tiny_transformers_model(root / "tiny-melody-hf", seed=2, melody=True)
    yield TransformersEngine(str(path), device="cpu")


def test_tiny_dir_loads_through_from_pretrained(model_dir: Path,
                                                engine: TransformersEngine) -> None:
    assert local_model_type(model_dir) == "musicgen"
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "preprocessor_config.json"} <= {p.name for p in model_dir.iterdir()}
    info = engine.describe()
    assert (info.engine, info.device, info.dtype) == ("transformers", "cpu", "float32")
    assert info.model == "transformers:local:tiny-musicgen-hf" and "transformers" in info.versions
    sup = engine.supports
    assert (sup.sample_rate, sup.channels, sup.melody, sup.continuation, sup.stereo) == (
        SR, 1, False, True, False)
    assert sup.max_duration_s == 30.0  # one pass: no long form, whatever the spec allows


def test_a_seed_gives_the_same_audio_alone_or_in_a_batch_of_three(
    engine: TransformersEngine,
) -> None:
    jobs = [GenerationJob(prompt="dark techno", duration_s=DUR, seed=s) for s in (41, 7, 99)]
    together = engine.generate(jobs)
    assert [g.batch_size for g in together] == [3, 3, 3]
    assert all(g.audio.shape == (1, round(DUR * SR)) for g in together)
    (alone,) = engine.generate([jobs[0]])
    assert alone.batch_size == 1
    np.testing.assert_array_equal(alone.audio, together[0].audio)  # bit-identical
    assert not np.array_equal(together[0].audio, together[1].audio)  # seeds matter
    # Reordered, in another batch: the same seed still gives the same audio.
    shuffled = engine.generate([jobs[2], jobs[0]])
    np.testing.assert_array_equal(shuffled[1].audio, together[0].audio)
    np.testing.assert_array_equal(shuffled[0].audio, together[2].audio)


def test_guidance_matches_transformers_and_takes_any_coefficient(
    engine: TransformersEngine,
) -> None:
    # The sampler's guidance is transformers' own: greedy picks agree on random scores.
    jobs, codebooks, card = 2, 4, 64
    scores = torch.randn((2 * jobs * codebooks, card), generator=torch.Generator().manual_seed(0))
    ids = torch.zeros((jobs * codebooks, 1), dtype=torch.long)
    guidance: Any = transformers.ClassifierFreeGuidanceLogitsProcessor  # untyped
    theirs = guidance(3.0)(ids, scores).argmax(-1)
    sampler = SeededSampler([torch.Generator() for _ in range(jobs)], codebooks,
                            GenerationParams(temperature=0.0, cfg_coef=3.0))
    mine = guidance(2.0)(ids, sampler(ids, scores)).argmax(-1)
    assert torch.equal(mine, theirs)
    # End to end: top_k=1 samples the guided argmax, i.e. greedy; cfg below 1 is honoured.
    greedy = GenerationJob(prompt="calm piano", duration_s=DUR, seed=1,
                           params=GenerationParams(temperature=0.0))
    top1 = GenerationJob(prompt="calm piano", duration_s=DUR, seed=2,
                         params=GenerationParams(top_k=1))
    weak = GenerationJob(prompt="calm piano", duration_s=DUR, seed=1,
                         params=GenerationParams(temperature=0.0, cfg_coef=0.0))
    nucleus = GenerationJob(prompt="calm piano", duration_s=DUR, seed=2,
                            params=GenerationParams(top_p=0.9, temperature=1.2))
    out = engine.generate([greedy, top1, weak, nucleus])
    assert [g.batch_size for g in out] == [1, 1, 1, 1]  # params differ: one group each
    np.testing.assert_array_equal(out[0].audio, out[1].audio)
    assert not np.array_equal(out[0].audio, out[2].audio)  # unconditional (cfg 0) differs
    assert not np.array_equal(out[1].audio, out[3].audio)


def test_stems_are_prompts_and_each_stem_is_batch_independent(
    engine: TransformersEngine,
) -> None:
    request = GenerationRequest(prompt="energetic", duration_s=DUR, seed=5,
                                stems=("drums", "bass", "piano"), bpm=120.0, style="rock")
    jobs = jobs_for(request)
    assert [j.prompt for j in jobs] == ["rock drums, 120 bpm, energetic",
                                        "rock bass line, 120 bpm, energetic",
                                        "rock piano, 120 bpm, energetic"]
    stems = engine.generate(jobs)
    assert len({s.audio.tobytes() for s in stems}) == 3  # each stem prompt is its own audio
    (bass,) = engine.generate([jobs[1]])
    np.testing.assert_array_equal(bass.audio, stems[1].audio)
    assert mix([s.audio for s in stems]).shape == (1, round(DUR * SR))


def test_progress_is_reported_per_request_and_reaches_one(engine: TransformersEngine) -> None:
    seen: dict[str, list[float]] = {}

    def on_progress(ids: object, fraction: float) -> None:
        for rid in ids:  # type: ignore[attr-defined]
            seen.setdefault(rid, []).append(fraction)

    jobs = [GenerationJob(prompt="x", duration_s=DUR, seed=i, request_id=f"r{i}")
            for i in range(2)]
    engine.generate(jobs, on_progress)
    assert set(seen) == {"r0", "r1"}
    for fractions in seen.values():
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 10


def test_continuation_and_validation(engine: TransformersEngine) -> None:
    prompt = _tone(220.0, 0.1, 16_000)  # resampled to 32 kHz, encoded to 5 frames
    job = GenerationJob(prompt="x", duration_s=DUR, seed=3, continuation=prompt)
    plain = GenerationJob(prompt="x", duration_s=DUR, seed=3)
    out = engine.generate([job, plain])
    assert [g.batch_size for g in out] == [1, 1]
    assert out[0].audio.shape == (1, round(DUR * SR))
    assert not np.array_equal(out[0].audio, out[1].audio)
    with pytest.raises(UnsupportedError):
        engine.validate(GenerationJob(prompt="x", duration_s=1.0, seed=1, melody=prompt))
    with pytest.raises(LimitExceededError):
        engine.validate(GenerationJob(prompt="x", duration_s=31.0, seed=1))
    with pytest.raises(InvalidRequestError):
        engine.validate(GenerationJob(prompt="x", duration_s=0.1, seed=1, continuation=prompt))
    engine.check_health()


def test_melody_model_follows_the_melody_and_batches_exactly(
    melody_engine: TransformersEngine,
) -> None:
    info, sup = melody_engine.describe(), melody_engine.supports
    assert info.model == "transformers:local:tiny-melody-hf" and sup.melody
    a440 = _tone(440.0, 1.0, 16_000)  # chroma A, resampled by the feature extractor
    c262 = _tone(261.6, 0.5, SR)  # chroma C, another length and rate: same batch
    jobs = [GenerationJob(prompt="piano", duration_s=DUR, seed=5, melody=a440),
            GenerationJob(prompt="piano", duration_s=DUR, seed=6, melody=c262),
            GenerationJob(prompt="piano", duration_s=DUR, seed=5)]
    out = melody_engine.generate(jobs)
    assert [g.batch_size for g in out] == [2, 2, 1]
    # The melody reaches the model (transformers 4.57 alone would drop it: see
    # keep_first_step_conditioning), so it changes the audio against no melody.
    assert not np.array_equal(out[0].audio, out[2].audio)
    (alone,) = melody_engine.generate([jobs[0]])
    np.testing.assert_array_equal(alone.audio, out[0].audio)


def test_stereo_model_interleaves_codebooks_and_continues_stereo(tmp_path: Path) -> None:
    path = make_tiny_transformers_model(tmp_path / "tiny-stereo-hf", seed=3, stereo=True)
    stereo = TransformersEngine(str(path), device="cpu")
    sup = stereo.supports
    assert (sup.channels, sup.stereo, sup.continuation) == (2, True, True)
    both = AudioInput(samples=np.concatenate([_tone(300.0, 0.1, SR).samples,
                                              _tone(500.0, 0.1, SR).samples]), sample_rate=SR)
    jobs = [GenerationJob(prompt="x", duration_s=DUR, seed=s) for s in (1, 2)]
    jobs.append(GenerationJob(prompt="x", duration_s=DUR, seed=1, continuation=both))
    out = stereo.generate(jobs)
    assert [g.audio.shape for g in out] == [(2, round(DUR * SR))] * 3
    assert [g.batch_size for g in out] == [2, 2, 1]
    assert not np.array_equal(out[0].audio[0], out[0].audio[1])  # two decoded channels
    (alone,) = stereo.generate([jobs[1]])
    np.testing.assert_array_equal(alone.audio, out[1].audio)


def test_load_errors_are_typed(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigurationError):
        TransformersEngine(str(tmp_path))  # not a transformers dir, not a known id
    with pytest.raises(NoGpuError, match="cpu"):
        TransformersEngine(str(model_dir), device="cuda")
    with pytest.raises(NoGpuError):  # the request-facing "transformers:<model>" name resolves
        TransformersEngine(f"transformers:{model_dir}", device="cuda")
    with pytest.raises(ConfigurationError):
        parse_spec({"engine": "transformer", "model": str(model_dir)})
