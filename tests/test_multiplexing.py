"""Several models per MusicGen deployment (Ray Serve model multiplexing) and ``GET /v1/models``.

Real parts only: three different tiny random-weight MusicGen checkpoints (seeds 1, 2, 3) served
by one MusicGen replica that keeps at most two loaded, inside the whole musicfn application
(ingress, job runner, catalogue owner, SeaweedFS) on the session's Ray cluster and Serve proxy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings

pytestmark = [pytest.mark.ray]

APP = "multiplexing"
PREFIX = "/v-mux"
A, B, C = "local:tiny-a", "local:tiny-b", "local:tiny-c"
REQUEST = {"prompt": "lofi beat", "duration_s": 0.5, "seed": 7, "params": {"top_k": 50}}


@pytest.fixture(scope="module")
def app(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Any]]:
    """(HTTP client of the app, handle of its MusicGen deployment)."""
    from ray import serve

    from deployments.app import build_app
    from engines.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("mux")
    models = {name: {"engine": "audiocraft",
                     "model": str(make_tiny_model(root / name.removeprefix("local:"), seed=i))}
              for i, name in enumerate((A, B, C), start=1)}
    settings = make_settings(s3_server, root / "data")
    serve.run(build_app({
        "models": models, "default_model": A, "max_models_per_replica": 2,
        "device": "cpu", "num_cpus": 0, "batch_wait_timeout_s": 0.2, "max_duration_s": 5,
        "settings": settings.model_dump()}), name=APP, route_prefix=PREFIX)
    handle = serve.get_deployment_handle("MusicGen", app_name=APP)
    with httpx.Client(base_url=f"{serve_url}{PREFIX}", timeout=120) as client:
        yield client, handle
    serve.delete(APP)


def _generate(handle: Any, model: str | None, **extra: Any) -> Any:
    """One generation through the runner's client (EngineClient: multiplexed routing)."""
    from jobs.engine_client import EngineClient

    body = {**REQUEST, **extra, **({} if model is None else {"model": model})}
    return _run(EngineClient(handle).generate.remote(body))


def _run(awaitable: Any) -> Any:
    import asyncio

    async def wait() -> Any:
        return await awaitable

    return asyncio.run(wait())


def _listing(client: httpx.Client) -> dict[str, Any]:
    """GET /v1/models once the replica's report and the live limits have reached the ingress
    (both are read with a short timeout, so a busy machine may need another try)."""
    body: dict[str, Any] = {}
    for _ in range(10):
        response = client.get("/v1/models")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["replicas"] and all(m["supports"]["max_duration_s"] == 5.0
                                    for m in body["models"]):
            break
        time.sleep(1.0)  # the ingress caches both for a few seconds
    return body


def _loaded(handle: Any) -> list[str]:
    loaded: list[str] = handle.models.remote().result().loaded
    return loaded


def test_a_request_runs_on_the_model_it_names(app: tuple[httpx.Client, Any]) -> None:
    _, handle = app
    first = _generate(handle, A)
    second = _generate(handle, B)
    assert (first.model, second.model) == (A, B)
    assert first.engine == second.engine == "audiocraft"
    assert first.audio.shape == second.audio.shape
    assert not np.allclose(first.audio, second.audio)  # same seed, other weights
    again = _generate(handle, B)
    np.testing.assert_array_equal(again.audio, second.audio)
    # No model in the request: the routing hint, then the default.
    hinted = handle.options(multiplexed_model_id=B).generate.remote(REQUEST).result()
    assert hinted.model == B
    np.testing.assert_array_equal(hinted.audio, second.audio)
    assert handle.generate.remote(REQUEST).result().model == A


def test_the_least_recently_used_model_is_evicted(app: tuple[httpx.Client, Any]) -> None:
    _, handle = app
    for name in (A, B, A):
        _generate(handle, name)
    assert _loaded(handle) == [B, A], _loaded(handle)  # least recently used first
    _generate(handle, C)
    assert _loaded(handle) == [A, C], _loaded(handle)  # B went: two per replica
    client, _ = app
    listing = _listing(client)
    assert [m["loaded_on"] != [] for m in listing["models"]] == [True, False, True], listing
    assert list(listing["replicas"].values()) == [[A, C]], listing


def test_batches_hold_one_model(app: tuple[httpx.Client, Any]) -> None:
    _, handle = app
    alone = {name: _generate(handle, name, seed=11).audio for name in (A, C)}
    responses = [handle.options(multiplexed_model_id=name).generate.remote(
        {**REQUEST, "seed": 11, "model": name}) for name in (A, C, A, C)]
    results = [r.result() for r in responses]
    for name, result in zip((A, C, A, C), results, strict=True):
        assert result.model == name
        assert result.batch_size <= 2
        np.testing.assert_array_equal(result.audio, alone[name])


def test_models_route_lists_what_can_be_requested(app: tuple[httpx.Client, Any]) -> None:
    client, handle = app
    _generate(handle, A)
    body = _listing(client)
    assert body["default"] == A
    assert body["multiplexed"] is True
    assert body["max_models_per_replica"] == 2
    assert [m["name"] for m in body["models"]] == [A, B, C]
    by_name = {m["name"]: m for m in body["models"]}
    assert [m["default"] for m in body["models"]] == [True, False, False]
    assert {m["engine"] for m in body["models"]} == {"audiocraft"}
    loaded = by_name[A]
    assert loaded["loaded_on"] == list(body["replicas"]), body
    assert loaded["supports"] == {"melody": False, "continuation": True,
                                  "max_duration_s": 5.0}  # capped by the live limit
    assert all(m["supports"]["max_duration_s"] == 5.0 for m in by_name.values())
    schema = client.get("/openapi.json").json()
    assert "/v1/models" in schema["paths"]


def test_an_unknown_model_is_refused_with_its_code(app: tuple[httpx.Client, Any]) -> None:
    client, handle = app
    response = client.post("/v1/generations", json={
        "prompt": "x", "duration_s": 0.5, "model": "local:tiny-z"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "model_not_served"
    from musicfn.errors import UnsupportedError, original_error

    with pytest.raises(UnsupportedError) as info:
        _generate(handle, "local:tiny-z")
    assert getattr(original_error(info.value), "code", None) == "model_not_served"


def test_http_generation_on_the_second_model(app: tuple[httpx.Client, Any]) -> None:
    client, _ = app
    response = client.post("/v1/generations", params={"wait": 90}, json={
        "prompt": "lofi beat", "duration_s": 0.5, "seed": 7, "top_k": 50, "model": B})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "completed", record
    assert record["record"]["model"] == B


@pytest.mark.parametrize(("args", "needle"), [
    ({"models": {A: {"model": "/m"}}, "default_model": B}, "default_model"),
    ({"models": {"my model": {"model": "/m"}}}, "model name"),
    ({"models": {A: {}}}, "checkpoint directory"),
    ({"models": {A: {"engine": "kazoo", "model": "/m"}}}, "engine"),
    ({"models": {A: {"model": "/m"}}, "max_models_per_replica": 0}, "max_models_per_replica"),
])
def test_bad_model_tables_fail_at_build(args: dict[str, Any], needle: str) -> None:
    from deployments.musicgen import build_app
    from musicfn.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=needle):
        build_app({"device": "cpu", **args})


def test_a_machine_override_to_one_model_drops_the_table() -> None:
    from deployments.serve_config import EngineOverrides, apply_overrides

    config = {"applications": [{"import_path": "deployments.app:build_app", "args": {
        "models": {A: {"model": "/m"}}, "default_model": A, "max_models_per_replica": 2}}]}
    synth = apply_overrides(config, EngineOverrides(engine="synth", device="cpu"))
    assert synth["applications"][0]["args"] == {"engine": "synth", "device": "cpu"}
    gpu = apply_overrides(config, EngineOverrides(engine="audiocraft", device="cuda"))
    assert gpu["applications"][0]["args"]["models"] == {A: {"model": "/m"}}
