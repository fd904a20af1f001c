"""Service routes: ``/v1/stats`` (catalogue and queue) and ``/healthz`` (dependencies).

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments.api.auth import has_api_key
from deployments.api.deps import ServicesDep
from musicfn import __version__, metrics

router = APIRouter(tags=["service"])
_HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["ok", "status", "s3", "catalogue", "engine"],
    "properties": {
        "ok": {"type": "boolean"}, "status": {"enum": ["ok", "degraded"]},
        **{name: {"type": "object", "required": ["ok"],
                  "properties": {"ok": {"type": "boolean"}}}
           for name in ("s3", "catalogue", "engine")}}}


@router.get("/v1/stats", response_model=dict[str, Any])
async def stats(services: ServicesDep) -> dict[str, Any]:
    """Counts by status, bytes per day, top prompts, and the job queue's depth."""
    result = await services.catalogue.stats()
    depth: int = await services.queue.depth()
    metrics.set_queue_depth("jobs", depth)
    return {**result.model_dump(mode="json"), "queue_depth": depth}


@router.get("/healthz", response_model=dict[str, Any], responses={
    200: {"description": "every dependency answers",
          "content": {"application/json": {"schema": _HEALTH_SCHEMA}}},
    503: {"description": "a dependency is down",
          "content": {"application/json": {"schema": _HEALTH_SCHEMA}}}})
async def healthz(request: Request, services: ServicesDep) -> JSONResponse:
    """``ok`` per dependency (S3, catalogue, engine); 503 when one is down. Needs no API key,
    and without one says no more than that: the S3 endpoint, versions, device and error codes
    only with a valid key (or when none is configured)."""
    checks: dict[str, dict[str, Any]] = {}
    error = await services.storage.check(fresh=True)
    checks["s3"] = {"ok": True, "endpoint": services.objects.endpoint} if error is None \
        else {"ok": False, "error": error.code}
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
    body: dict[str, Any] = {"ok": ok, "status": "ok" if ok else "degraded"}
    if has_api_key(request.headers, services.settings.api_key):
        body.update(version=__version__, **checks)
    else:
        body.update({name: {"ok": check["ok"]} for name, check in checks.items()})
    return JSONResponse(body, status_code=200 if ok else 503,
                        headers=None if ok else {"Retry-After": "5"})
