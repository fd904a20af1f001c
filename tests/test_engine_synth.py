"""The synth engine behind the MusicGen deployment (real Ray Serve), and its musical properties."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engines.base import GenerationJob
from engines.requests import AudioInput
from engines.synth import SynthEngine
from engines.theory import parse_key
from musicfn.errors import UnsupportedError
from musicfn.ports import free_port_block
from tests.support.musicgen import estimate_bpm, estimate_key

SR = 32_000
APP = "musicgen-synth-test"


@pytest.fixture(scope="module")
def synth(ray_cluster: Any) -> Iterator[Any]:
    from ray import serve

    from deployments.musicgen import build_app, deploy

    serve.start(http_options={"host": "127.0.0.1", "port": free_port_block()})
    handle = deploy(build_app({"engine": "synth", "num_cpus": 0, "device": "cuda"}), name=APP)
    yield handle
    serve.delete(APP)


@pytest.mark.ray
@pytest.mark.parametrize("bpm", [90, 110, 128, 150])
def test_analysed_bpm_matches_requested_bpm(synth: Any, bpm: float) -> None:
    result = synth.generate.remote(
        {"prompt": "demo", "duration_s": 12, "bpm": bpm, "seed": 7}
    ).result()
    assert result.engine == "synth" and result.model == "synth"
    assert result.audio.shape == (2, 12 * SR) and result.audio.dtype == np.float32
    assert estimate_bpm(result.audio, result.sample_rate) == pytest.approx(bpm, rel=0.04)


@pytest.mark.ray
def test_stems_come_back_per_stem_labelled_synth(synth: Any) -> None:
    stems = ["drums", "bass", "guitar", "vocals", "piano", "pad", "other"]
    result = synth.generate.remote(
        {"prompt": "upbeat", "duration_s": 3, "bpm": 120, "key": "A minor",
         "chords": ["Am", "F", "C", "G"], "style": "indie", "stems": stems, "seed": 5}
    ).result()
    assert result.engine == "synth"
    assert list(result.stems) == ["drums", "bass", "guitar", "vocals", "piano", "synth", "other"]
    assert result.stems["drums"].prompt == (
        "indie drums, 120 bpm, in A minor, chords Am F C G, upbeat"
    )
    for stem in result.stems.values():
        assert stem.audio.shape == (2, 3 * SR)
        assert 0.05 < float(np.abs(stem.audio).max()) <= 1.0
        assert np.isfinite(stem.audio).all()
    # Stems differ from each other, and the mix is their (peak-limited) sum.
    assert not np.allclose(result.stems["drums"].audio, result.stems["bass"].audio)
    assert result.audio.shape == (2, 3 * SR) and float(np.abs(result.audio).max()) <= 0.95 + 1e-6


@pytest.mark.ray
def test_audio_conditioning_is_rejected(synth: Any) -> None:
    audio = {"samples": np.zeros((1, SR), dtype=np.float32), "sample_rate": SR}
    for field in ("melody", "continuation"):
        with pytest.raises(UnsupportedError):
            synth.generate.remote({"prompt": "x", "duration_s": 2, field: audio}).result()


def test_seeded_output_is_deterministic_and_seed_dependent() -> None:
    engine = SynthEngine()
    job = GenerationJob(prompt="x", duration_s=2.0, seed=11, bpm=100, stem="drums")
    first, again = engine.render(job), engine.render(job)
    np.testing.assert_array_equal(first, again)
    other = engine.render(GenerationJob(prompt="x", duration_s=2.0, seed=12, bpm=100,
                                        stem="drums"))
    assert not np.array_equal(first, other)


def test_stereo_with_fades() -> None:
    audio = SynthEngine().render(GenerationJob(prompt="x", duration_s=2.0, seed=1))
    assert audio.shape == (2, 2 * SR)
    assert audio[:, 0].tolist() == [0.0, 0.0] and audio[:, -1].tolist() == [0.0, 0.0]
    guitar = SynthEngine().render(GenerationJob(prompt="x", duration_s=2.0, seed=1,
                                                stem="guitar"))
    assert not np.allclose(guitar[0], guitar[1])  # panned off centre


@pytest.mark.parametrize("key", ["C major", "A minor", "F# minor", "Bb major"])
def test_analysed_key_matches_requested_key(key: str) -> None:
    audio = SynthEngine().render(GenerationJob(prompt="x", duration_s=10.0, seed=3, key=key,
                                               bpm=100))
    expected = parse_key(key)
    assert estimate_key(audio, SR) == (expected.tonic, expected.minor)


def test_validate_rejects_audio_prompts_in_process() -> None:
    audio = AudioInput(samples=np.zeros((1, 100), dtype=np.float32), sample_rate=SR)
    with pytest.raises(UnsupportedError) as info:
        SynthEngine().validate(GenerationJob(prompt="x", duration_s=1, seed=1, melody=audio))
    assert info.value.code == "melody_unsupported"


@pytest.mark.parametrize(
    ("bpm", "key"), [(75, "E major"), (110, "A minor"), (128, "F# minor"), (165, "D minor")]
)
def test_project_analysis_recovers_synth_bpm_and_key(bpm: float, key: str) -> None:
    analysis = pytest.importorskip("functions.analysis")
    audio = SynthEngine().render(GenerationJob(prompt="x", duration_s=12.0, seed=7, bpm=bpm,
                                               key=key))
    result = analysis.analyze(audio, SR)
    assert result.tempo.bpm == pytest.approx(bpm, rel=0.04)
    expected = parse_key(key)
    assert result.key.label == expected.name


@pytest.mark.ray
def test_prompt_alone_sets_tempo_and_key_through_serve(synth: Any) -> None:
    """No bpm/key fields: the prompt's tempo and style decide, for the mix and for every stem."""
    analysis = pytest.importorskip("functions.analysis")
    plain = synth.generate.remote(
        {"prompt": "ambient pads, 70 bpm, in E minor", "duration_s": 10, "seed": 3}
    ).result()
    stems = synth.generate.remote(
        {"prompt": "dark techno, 128 bpm", "duration_s": 10, "seed": 3,
         "stems": ["drums", "bass", "synth"]}
    ).result()
    for result, bpm, key in ((plain, 70.0, "E minor"), (stems, 128.0, "A minor")):
        measured = analysis.analyze(result.audio, result.sample_rate)
        assert measured.tempo.bpm == pytest.approx(bpm, rel=0.04)
        assert measured.key.label == key
