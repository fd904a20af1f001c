"""``GET /v1/models``: the models requests may name, and which MusicGen replica holds which.

The list is the MusicGen deployment's table (its config is the one owner; ``LiveModels`` reads
it). Where each model is loaded comes from the replicas themselves: each answers ``models()``
with its id and the models it holds, least recently used first (Serve's controller knows the
same multiplexed ids per replica, but only through private API).

No ``from __future__ import annotations``: FastAPI resolves these annotations at import.
"""

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from deployments.api.deps import ServicesDep
from deployments.served_models import ModelSupports

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    """One model a generation may ask for (``model`` in ``POST /v1/generations``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the value of `model` in a generation request")
    engine: str
    default: bool = Field(description="requests that name no model run on it")
    supports: ModelSupports = Field(
        description="melody and continuation conditioning (melody null until a replica has "
                    "loaded a local checkpoint), and the longest duration_s a request may ask "
                    "of it here (the engine's cap within the live limit)")
    loaded_on: list[str] = Field(description="ids of the replicas holding it now")


class ModelList(BaseModel):
    """``GET /v1/models``."""

    model_config = ConfigDict(frozen=True)

    default: str
    multiplexed: bool = Field(description="several models per deployment, loaded on demand")
    max_models_per_replica: int = Field(description="each replica keeps at most this many "
                                                    "loaded, evicting the least recently used")
    models: list[ModelInfo]
    replicas: dict[str, list[str]] = Field(
        description="replica id → the models it holds, least recently used first (the replicas "
                    "that answered within a few seconds)")


@router.get("/v1/models", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    """The models this deployment serves (name, engine, default, what each supports) and
    which replica has which loaded."""
    table = await services.models.get()
    limits = await services.limits.get()
    reports = await services.models.replicas()
    replicas = {rid: r.loaded for rid, r in sorted(reports.items())}
    models = []
    for name, spec in table.models.items():
        facts = table.supports(name)
        for report in reports.values():
            facts = report.seen.get(name, facts)
        cap = facts.max_duration_s
        facts = facts.model_copy(update={"max_duration_s": limits.max_duration_s if cap is None
                                         else min(cap, limits.max_duration_s)})
        models.append(ModelInfo(
            name=name, engine=spec.engine, default=name == table.default, supports=facts,
            loaded_on=[rid for rid, loaded in replicas.items() if name in loaded]))
    return ModelList(default=table.default, multiplexed=table.multiplexed,
                     max_models_per_replica=table.max_models_per_replica, models=models,
                     replicas=replicas)
