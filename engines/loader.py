"""Which engine to load, described as data (it travels to replicas as deployment init args)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.base import Engine
from musicfn.errors import ConfigurationError

Device = Literal["auto", "cuda", "cpu"]


class EngineSpec(BaseModel):
    """Engine name, model (HF id or local checkpoint dir), device and long-form cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["audiocraft", "synth"] = "audiocraft"
    model: str = "facebook/musicgen-small"
    # "auto" is resolved (cuda when the cluster has GPUs, else cpu) before the spec ships.
    device: Device = "cuda"
    max_duration_s: float = Field(default=120.0, gt=0.0, le=600.0)


def parse_spec(data: EngineSpec | dict[str, object]) -> EngineSpec:
    """Validate an engine spec; bad values raise ``ConfigurationError``."""
    if isinstance(data, EngineSpec):
        return data
    try:
        return EngineSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"engine spec {where}: {first['msg']}") from None


def load_engine(spec: EngineSpec) -> Engine:
    """Build the engine ``spec`` describes (loads model weights for audiocraft)."""
    if spec.engine == "synth":
        from engines.synth import SynthEngine

        return SynthEngine(max_duration_s=spec.max_duration_s)
    from engines.audiocraft_engine import AudiocraftEngine

    device = "cpu" if spec.device == "auto" else spec.device
    return AudiocraftEngine(spec.model, device=device, max_duration_s=spec.max_duration_s)
