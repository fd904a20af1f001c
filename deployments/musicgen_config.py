"""The MusicGen deployment's configuration: app args (``build_app``) and live ``user_config``.

Pure pydantic, no Serve: ``deployments.serve_config`` validates YAML with it, the ingress side
names the default model with ``default_model_of``. The served-model table (several models,
multiplexed) is built here from the args, its one owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.faults import FaultInjection
from deployments.served_models import ModelTable, ServedModel
from engines.loader import Device
from engines.requests import Limits, served_name
from musicfn.errors import ConfigurationError

#: The app args of the several-models (multiplexed) config.
MULTI_MODEL_ARGS = ("models", "default_model", "max_models_per_replica")


class MusicGenUserConfig(BaseModel):
    """The live-reconfigurable part of the deployment (Serve ``user_config``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(default=8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(default=0.05, ge=0.0, le=5.0)
    limits: Limits = Limits()
    fault_injection: FaultInjection | None = None  # tests only (deployments.faults)


class MusicGenAppArgs(BaseModel):
    """Arguments of ``build_app`` (the ``args:`` of a Serve config application)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: str = "audiocraft"
    model: str = "facebook/musicgen-small"
    device: Device = "cuda"
    max_long_form_s: float = Field(default=120.0, gt=0.0, le=600.0)
    num_replicas: int = Field(default=1, ge=1, le=64)
    num_cpus: float = Field(default=1.0, ge=0.0)
    max_batch_size: int = Field(default=8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(default=0.05, ge=0.0, le=5.0)
    max_duration_s: float | None = Field(default=None, gt=0.0, le=600.0)
    max_prompt_chars: int | None = Field(default=None, ge=1, le=4000)
    max_pending_jobs: int | None = Field(default=None, ge=1, le=10_000)
    # Off only for clusters whose GPU nodes appear through autoscaling.
    gpu_check: bool = True
    # Serve queueing and health checks; None keeps the deployment's defaults.
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=-1)
    health_check_period_s: float | None = Field(default=None, gt=0.0)
    fault_injection: FaultInjection | None = None  # tests only (deployments.faults)
    # Several models, multiplexed (they replace engine and model): name -> engine spec.
    models: dict[str, ServedModel] | None = None
    default_model: str | None = None  # None: the first of models
    max_models_per_replica: int | None = Field(default=None, ge=1, le=64)  # None: the table's

    def table(self) -> ModelTable | None:
        """The served-model table of ``models`` (None for the single-model config)."""
        if self.models is None:
            return None
        filled = {name: m.model_copy(update={"max_duration_s": m.max_duration_s
                                             or self.max_long_form_s})
                  for name, m in self.models.items()}
        extra = {} if self.max_models_per_replica is None else {
            "max_models_per_replica": self.max_models_per_replica}
        return ModelTable(models=filled, default=self.default_model or next(iter(filled)),
                          multiplexed=True, **extra)


def parse_app_args(args: Mapping[str, Any] | None) -> tuple[MusicGenAppArgs, ModelTable | None]:
    """The validated app args and their served-model table (None: the single-model config);
    ``ConfigurationError`` for bad args."""
    try:
        a = MusicGenAppArgs.model_validate(dict(args or {}))
        return a, a.table()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid MusicGen app args: {exc}") from None


def default_model_of(args: Mapping[str, Any] | None) -> str:
    """The model requests without one run on, for the MusicGen app ``args``."""
    a, table = parse_app_args(args)
    if table is not None:
        return table.default
    return served_name(a.engine, a.model)


__all__ = ["MULTI_MODEL_ARGS", "MusicGenAppArgs", "MusicGenUserConfig", "default_model_of",
           "parse_app_args"]
