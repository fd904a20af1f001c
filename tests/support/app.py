"""The one way tests deploy the musicfn application on the session's Serve."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from musicfn.settings import Settings


@contextmanager
def deployed_app(settings: Settings, name: str, route_prefix: str, **args: Any) -> Iterator[str]:
    """The whole application (``deployments.app:build_app``: synth engine on the CPU unless
    ``args`` say otherwise) under ``route_prefix``; yields its base URL, deletes it after."""
    from ray import serve

    from deployments.app import build_app

    values = {"engine": "synth", "device": "cpu", "num_cpus": 0.5, **args,
              "settings": settings.model_dump()}
    serve.run(build_app(values), name=name, route_prefix=route_prefix)
    try:
        yield f"{os.environ['MUSICFN_TEST_SERVE_URL']}{route_prefix}"
    finally:
        serve.delete(name)
