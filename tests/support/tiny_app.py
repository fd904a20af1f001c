"""The whole musicfn application over the tiny random-weight MusicGen (not a test module).

Composed here rather than with ``deployments.app.build_app``: the ingress must be told the
served model's label (``local:<dir name>``), the name requests and results use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engines.audiocraft_engine import model_label
from musicfn.settings import Settings
from tests.support.musicgen import tiny_model_dir

FINAL = ("completed", "failed", "canceled")


@dataclass
class TinyApp:
    """A deployed app: its name, HTTP client and settings."""

    name: str
    client: httpx.Client
    settings: Settings

    def owner(self) -> Any:
        """The catalogue owner actor (read the jobs table through it)."""
        import ray

        from storage.catalogue.actor import owner_name

        return ray.get_actor(owner_name(self.settings.catalogue_file),
                             namespace=self.settings.ray_namespace)


def deploy_tiny_app(name: str, settings: Settings, **engine_args: Any) -> TinyApp:
    """Ingress + JobRunner + MusicGen (tiny model on the CPU) served under ``/<name>``."""
    from ray import serve

    from deployments.ingress import Ingress
    from deployments.musicgen import build_app as build_musicgen
    from deployments.runner import JobRunner

    model = str(tiny_model_dir())
    engine = build_musicgen({"model": model, "device": "cpu", "num_cpus": 0,
                             "batch_wait_timeout_s": 0.01, **engine_args})
    runner: Any = JobRunner
    ingress: Any = Ingress
    app = ingress.bind(engine, runner.bind(engine, settings=settings.model_dump()),
                       default_model=model_label(model), settings=settings.model_dump())
    serve.run(app, name=name, route_prefix=f"/{name}")
    client = httpx.Client(base_url=f"{os.environ['MUSICFN_TEST_SERVE_URL']}/{name}",
                          timeout=300)
    return TinyApp(name, client, settings)


def teardown_tiny_app(app: TinyApp) -> None:
    """Delete the application and its detached catalogue owner."""
    import contextlib

    import ray
    from ray import serve

    app.client.close()
    serve.delete(app.name)
    with contextlib.suppress(ValueError):
        ray.kill(app.owner())


def wav_bytes(audio: Any, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """(channels, samples) float audio as WAV bytes."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def model_dir() -> Path:
    """The tiny checkpoint directory."""
    return tiny_model_dir()
