"""The musicfn application: ingress, MusicGen, job runners and the incoming/ poller.

``build_app`` is the ``import_path`` of ``serve_config.yaml``; its ``args`` are the MusicGen
app's (engine, model, device, batching) plus ``settings`` overrides (tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.musicgen import build_app as build_musicgen
from deployments.musicgen_config import default_model_of
from deployments.poller import EventPoller
from deployments.runner import JobRunner


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """Ingress + MusicGen + JobRunner + EventPoller (idle unless enabled).

    Raises NoGpuError at once for GPU placement without GPUs."""
    values = dict(args or {})
    settings = values.pop("settings", None)
    engine_app = build_musicgen(values)
    model = default_model_of(values)
    runner: Any = JobRunner
    ingress: Any = Ingress
    poller: Any = EventPoller
    runners = runner.bind(engine_app, settings=settings)
    app: Application = ingress.bind(engine_app, runners, default_model=model,
                                    settings=settings, poller=poller.bind(settings, runners))
    return app
