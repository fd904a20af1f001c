"""Service routes: ``/v1/stats`` (catalogue and queue) and ``/healthz`` (dependencies).

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deployments.api.deps import ServicesDep
from musicfn import __version__, metrics
from musicfn.errors import MusicfnError

router = APIRouter(tags=["service"])


@router.get("/v1/stats", response_model=dict[str, Any])
async def stats(services: ServicesDep) -> dict[str, Any]:
    """Counts by status, bytes per day, top prompts, and the job queue's depth."""
    result = await services.catalogue.stats.remote()
    depth: int = await services.queue.depth()
    metrics.set_queue_depth("jobs", depth)
    return {**result.model_dump(mode="json"), "queue_depth": depth}


@router.get("/healthz", response_model=dict[str, Any],
            responses={503: {"description": "a dependency is down"}})
async def healthz(services: ServicesDep) -> JSONResponse:
    """Per-dependency status; 503 when any is down. Needs no API key."""
    checks: dict[str, Any] = {}
    try:
        await asyncio.to_thread(services.objects.ping)
        checks["s3"] = {"ok": True, "endpoint": services.objects.endpoint}
    except MusicfnError as exc:
        checks["s3"] = {"ok": False, "error": exc.code}
    try:
        depth = await asyncio.wait_for(services.queue.depth(), timeout=5)
        metrics.set_queue_depth("jobs", depth)
        checks["catalogue"] = {"ok": True, "queue_depth": depth}
    except Exception as exc:  # the owner is restarting or gone
        checks["catalogue"] = {"ok": False, "error": type(exc).__name__}
    try:
        info = await asyncio.wait_for(services.engine.describe.remote(), timeout=5)
        checks["engine"] = {"ok": True, **info}
    except Exception as exc:  # no replica answers
        checks["engine"] = {"ok": False, "error": type(exc).__name__}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"ok": ok, "version": __version__, **checks},
                        status_code=200 if ok else 503)
