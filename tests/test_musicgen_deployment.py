"""The MusicGen Serve deployment with a tiny random-weight audiocraft model, on real local Ray.

Nothing is mocked: the model is built from an omegaconf config with audiocraft's builders, saved
as a checkpoint directory and loaded through ``MusicGen.get_pretrained``; requests go through
``serve.run`` and a deployment handle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from musicfn.errors import (
    ConfigurationError,
    InvalidRequestError,
    LimitExceededError,
    MusicfnError,
    NoGpuError,
    UnsupportedError,
)
from tests.support import free_port_block
from tests.support.musicgen import tiny_model_dir

pytestmark = pytest.mark.ray

APP = "musicgen-tiny-test"
SR = 32_000


def _app_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": str(tiny_model_dir()),
        "device": "cpu",
        "num_cpus": 0,  # the shared 2-CPU test cluster stays free for other suites
        "max_batch_size": 8,
        "batch_wait_timeout_s": 0.25,
        "max_duration_s": 10,
        "max_prompt_chars": 60,
    }
    args.update(overrides)
    return args


@pytest.fixture(scope="module")
def serve_local(ray_cluster: Any) -> Iterator[None]:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": free_port_block()})
    yield


@pytest.fixture(scope="module")
def handle(serve_local: None) -> Iterator[Any]:
    from ray import serve

    from deployments.musicgen import build_app, deploy

    h = deploy(build_app(_app_args()), name=APP)
    yield h
    serve.delete(APP)


def _gen(handle: Any, **req: Any) -> Any:
    return handle.generate.remote(req).result()


def _concurrently(handle: Any, requests: list[dict[str, Any]]) -> list[Any]:
    responses = [handle.generate.remote(r) for r in requests]
    return [r.result() for r in responses]


@pytest.mark.parametrize("duration", [0.5, 1.0, 1.37, 2.0])
def test_generates_requested_samples_at_32k(handle: Any, duration: float) -> None:
    result = _gen(handle, prompt="lofi beat", duration_s=duration, seed=1)
    assert result.engine == "audiocraft"
    assert result.model == "local:tiny-musicgen"
    assert result.sample_rate == SR
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (1, round(duration * SR))
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0


def test_concurrent_requests_with_two_param_sets_never_mix(handle: Any) -> None:
    set_a = {"duration_s": 1.0, "params": {"top_k": 50, "temperature": 1.0}}
    set_b = {"duration_s": 1.6, "params": {"top_k": 200, "temperature": 0.7, "cfg_coef": 1.5}}
    requests = [
        {"prompt": f"song {i}", "seed": 100 + i, **(set_a if i % 2 else set_b)} for i in range(8)
    ]
    together = _concurrently(handle, requests)
    alone = [handle.generate.remote(r).result() for r in requests]
    for req, got, solo in zip(requests, together, alone, strict=True):
        assert got.audio.shape == (1, round(req["duration_s"] * SR))
        assert got.params.model_dump() == {**got.params.model_dump(), **req["params"]}
        # Each request's audio is exactly what its own params give when it runs alone.
        np.testing.assert_array_equal(got.audio, solo.audio)
        assert got.batch_size <= 4  # a batch holds only one param set
    assert max(r.batch_size for r in together) >= 2  # and batching did happen


def test_same_seed_gives_identical_audio_batched_or_alone(handle: Any) -> None:
    req = {"prompt": "ambient drone", "duration_s": 1.2, "seed": 4242}
    first = _gen(handle, **req)
    again = _gen(handle, **req)
    batch = _concurrently(
        handle, [req] + [{**req, "seed": 1 + i, "prompt": f"other {i}"} for i in range(7)]
    )
    assert batch[0].batch_size >= 2
    np.testing.assert_array_equal(first.audio, again.audio)
    np.testing.assert_array_equal(first.audio, batch[0].audio)
    assert first.seed == batch[0].seed == 4242


def test_different_seeds_give_different_audio(handle: Any) -> None:
    results = _concurrently(
        handle, [{"prompt": "ambient drone", "duration_s": 1.0, "seed": s} for s in (1, 2, 3)]
    )
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(results[i].audio, results[j].audio)


def test_seed_is_assigned_and_reported_when_missing(handle: Any) -> None:
    result = _gen(handle, prompt="jazz", duration_s=0.5)
    repeat = _gen(handle, prompt="jazz", duration_s=0.5, seed=result.seed)
    np.testing.assert_array_equal(result.audio, repeat.audio)


def test_melody_rejected_for_a_model_without_melody_conditioning(handle: Any) -> None:
    melody = {"samples": np.zeros((1, SR), dtype=np.float32), "sample_rate": SR}
    with pytest.raises(UnsupportedError) as info:
        _gen(handle, prompt="x", duration_s=1.0, melody=melody)
    assert "melody" in str(info.value)


def test_continuation_extends_the_given_audio(handle: Any) -> None:
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, SR // 2))).astype(np.float32)
    result = _gen(handle, prompt="x", duration_s=1.5, seed=3,
                  continuation={"samples": audio, "sample_rate": SR})
    assert result.audio.shape == (1, round(1.5 * SR))
    with pytest.raises(InvalidRequestError):  # audio prompt longer than the output
        _gen(handle, prompt="x", duration_s=0.4, continuation={"samples": audio,
                                                                "sample_rate": SR})


def test_stems_come_back_per_stem_with_their_prompts(handle: Any) -> None:
    result = _gen(handle, prompt="energetic", duration_s=0.8, seed=9, stems=["drums", "bass"],
                  bpm=120, style="rock")
    assert set(result.stems) == {"drums", "bass"}
    assert result.stems["drums"].prompt == "rock drums, 120 bpm, energetic"
    assert result.stems["drums"].seed != result.stems["bass"].seed
    for stem in result.stems.values():
        assert stem.audio.shape == (1, round(0.8 * SR))
    assert result.audio.shape == (1, round(0.8 * SR))
    assert result.batch_size == 2


_TOO_LONG = "x" * 61


@pytest.mark.parametrize(
    ("request_", "error", "code"),
    [
        ({"prompt": "x", "duration_s": 0}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": -1.0}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": math.nan}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": math.inf}, InvalidRequestError, "invalid_duration_s"),
        ({"prompt": "x", "duration_s": 10.5}, LimitExceededError, "duration_limit"),
        ({"prompt": "", "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": "  \t ", "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": "a\x00b", "duration_s": 1}, InvalidRequestError, "invalid_prompt"),
        ({"prompt": _TOO_LONG, "duration_s": 1}, LimitExceededError, "prompt_limit"),
        ({"prompt": "x", "duration_s": 1, "model": "facebook/musicgen-huge"},
         InvalidRequestError, "unknown_model"),
        ({"prompt": "x", "duration_s": 1, "model": "facebook/musicgen-small"},
         UnsupportedError, "model_not_served"),
        ({"prompt": "x", "duration_s": 1, "stems": ["kazoo"]}, InvalidRequestError,
         "unknown_stem"),
        ({"prompt": "x", "duration_s": 1, "params": {"top_k": 1000}}, InvalidRequestError,
         "invalid_top_k"),
        ({"prompt": "x", "duration_s": 1, "params": {"temperature": -1}}, InvalidRequestError,
         "invalid_params"),
        ({"duration_s": 1}, InvalidRequestError, "invalid_prompt"),
    ],
)
def test_bad_requests_get_typed_errors(
    handle: Any, request_: dict[str, Any], error: type[MusicfnError], code: str
) -> None:
    with pytest.raises(error) as info:
        handle.generate.remote(request_).result()
    assert _cause(info.value).code == code


def _cause(exc: BaseException) -> Any:
    """The replica's exception inside Ray's RayTaskError wrapper.

    The wrapper subclasses the cause's class (so ``pytest.raises(InvalidRequestError)`` works)
    but class attributes shadow the cause's instance attributes, ``code`` included.
    """
    return getattr(exc, "cause", exc)


def test_check_health_and_describe(handle: Any) -> None:
    assert handle.check_health.remote().result() is None
    info = handle.describe.remote().result()
    assert info["engine"] == "audiocraft"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["supports"]["sample_rate"] == SR and info["supports"]["melody"] is False


def _deploy_config(config: dict[str, Any], name: str) -> Any:
    """Deploy like ``serve deploy config.yaml`` does (the dashboard is off in tests)."""
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    serve.context._get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    for _ in range(240):  # guard against a hang, not a timing assertion
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return serve.get_app_handle(name)
        time.sleep(0.5)
    raise AssertionError(f"{name} did not reach RUNNING: {status}")


def test_batch_settings_change_live_through_user_config(serve_local: None) -> None:
    from ray import serve

    name = "musicgen-config-test"

    def config(max_batch_size: int, wait: float) -> dict[str, Any]:
        user_config = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": wait,
                       "limits": {"max_duration_s": 5}}
        return {"applications": [{
            "name": name, "route_prefix": None,
            "import_path": "deployments.musicgen:build_app",
            "args": {"model": str(tiny_model_dir()), "device": "cpu", "num_cpus": 0},
            "deployments": [{"name": "MusicGen", "user_config": user_config}],
        }]}

    try:
        h = _deploy_config(config(8, 0.05), name)
        before = h.stats.remote().result()
        assert before["max_batch_size"] == 8
        h = _deploy_config(config(2, 0.5), name)
        after = h.stats.remote().result()
        assert after["max_batch_size"] == 2 and after["batch_wait_timeout_s"] == 0.5
        assert after["load_time_s"] == before["load_time_s"]  # same replica, reconfigured live
        results = _concurrently(h, [{"prompt": "p", "duration_s": 0.5, "seed": i}
                                    for i in range(4)])
        assert max(r.batch_size for r in results) <= 2
        with pytest.raises(LimitExceededError):  # limits come from user_config too
            h.generate.remote({"prompt": "p", "duration_s": 6}).result()
    finally:
        serve.delete(name)


@pytest.mark.timeout(60)  # a hang, not slowness, is the failure this guards against
def test_gpu_pinned_app_fails_fast_without_gpus(serve_local: None) -> None:
    from ray import serve

    from deployments.musicgen import MusicGenDeployment, build_app, deploy

    with pytest.raises(NoGpuError) as info:
        build_app(_app_args(device="cuda"))
    message = str(info.value)
    assert "GPU" in message and "--device cpu" in message

    pinned = MusicGenDeployment.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_gpus": 1}
    ).bind({"engine": "audiocraft", "model": str(tiny_model_dir()), "device": "cuda"})
    with pytest.raises(NoGpuError, match="--device cpu"):
        deploy(pinned, name="gpu-pinned")
    assert "gpu-pinned" not in serve.status().applications


def test_bad_app_args_are_configuration_errors(serve_local: None) -> None:
    from deployments.musicgen import build_app

    with pytest.raises(ConfigurationError):
        build_app({"device": "tpu"})
