"""The musicfn application: the HTTP ingress bound to the MusicGen deployment.

``build_app`` is the ``import_path`` of ``serve_config.yaml``; its ``args`` are the MusicGen
app's (engine, model, device, batching) plus ``settings`` overrides for the ingress (tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.musicgen import build_app as build_musicgen
from deployments.triggers.poller_deployment import EventPoller


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """Ingress + MusicGen + the incoming/ poller (idle unless enabled).

    Raises NoGpuError at once for GPU placement without GPUs."""
    values = dict(args or {})
    settings = values.pop("settings", None)
    engine_app = build_musicgen(values)
    model = "synth" if values.get("engine") == "synth" else str(
        values.get("model", "facebook/musicgen-small"))
    ingress: Any = Ingress
    poller: Any = EventPoller
    app: Application = ingress.bind(engine_app, default_model=model, settings=settings,
                                    poller=poller.bind(settings))
    return app
