"""Which engine to load, described as data (it travels to replicas as deployment init args)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.base import Engine
from musicfn.errors import ConfigurationError

Device = Literal["auto", "cuda", "cpu"]
# The engines musicfn can run: the one list every config, request model and CLI reads.
EngineName = Literal["audiocraft", "transformers", "synth"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)


class EngineSpec(BaseModel):
    """Engine name, model (HF id or local checkpoint dir), device and long-form cap.

    ``engine`` decides how ``model`` is loaded: the ``facebook/musicgen-*`` repos hold both
    audiocraft and transformers weights, so an HF id means either; a local directory must be
    the matching kind (audiocraft: ``state_dict.bin`` pair; transformers: ``save_pretrained``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: EngineName = "audiocraft"
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
    """Build the engine ``spec`` describes (loads model weights for audiocraft/transformers)."""
    if spec.engine == "synth":
        from engines.synth import SynthEngine

        return SynthEngine(max_duration_s=spec.max_duration_s)
    device = "cpu" if spec.device == "auto" else spec.device
    if spec.engine == "transformers":
        from engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec.model, device=device, max_duration_s=spec.max_duration_s)
    from engines.audiocraft_engine import AudiocraftEngine

    return AudiocraftEngine(spec.model, device=device, max_duration_s=spec.max_duration_s)
