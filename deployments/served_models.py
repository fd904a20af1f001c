"""Which models one MusicGen deployment serves: the table, its checks and the replica reports.

The table's one owner is the MusicGen deployment's config (``build_app`` args ``models``,
``default_model``, ``max_models_per_replica``; a single ``model`` is a one-row table). The
replicas hold it and answer ``models()`` with it and with what they have loaded; the ingress
reads it from there (``deployments.api.deps.LiveModels``), checks requests against it
(``ModelTable.resolve``) and lists it at ``GET /v1/models``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engines.loader import EngineSpec
from engines.requests import (
    KNOWN_MODELS,
    SYNTH_MODEL,
    TRANSFORMERS_PREFIX,
    Limits,
    engine_of,
    parse_request,
)
from musicfn.errors import MusicfnError, UnsupportedError

# Engines that run MusicGen checkpoints (the synth has no checkpoint).
_MUSICGEN_ENGINES = ("audiocraft", "transformers")


class ServedModel(BaseModel):
    """One servable model: the engine that runs it and what that engine loads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: str = "audiocraft"  # one of the engines EngineSpec (engines.loader) can load
    # An HF id audiocraft downloads, or a local checkpoint directory; None: the model's name.
    model: str | None = Field(default=None, min_length=1)
    # The long-form cap of this model; None: the app's max_long_form_s (build_app fills it in).
    max_duration_s: float | None = Field(default=None, gt=0.0, le=600.0)


    @field_validator("engine")
    @classmethod
    def _loadable(cls, v: str) -> str:
        allowed = EngineSpec.model_json_schema()["properties"]["engine"].get("enum", [v])
        if v not in allowed:
            raise ValueError(f"engine must be one of {', '.join(allowed)}, not {v!r}")
        return v


class ModelSupports(BaseModel):
    """What a model can do; None where only loading the model tells (e.g. melody for a local
    checkpoint) and no replica has loaded it yet."""

    model_config = ConfigDict(frozen=True)

    melody: bool | None
    continuation: bool | None
    max_duration_s: float | None  # the engine's long-form cap (None: not known yet)


class ModelTable(BaseModel):
    """The models a deployment serves, its default and the per-replica LRU size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ServedModel] = Field(min_length=1)
    default: str
    max_models_per_replica: int = Field(default=1, ge=1, le=64)
    multiplexed: bool = False  # False: one model loaded at start (the single-model config)

    @model_validator(mode="after")
    def _default_is_served(self) -> ModelTable:
        if self.default not in self.models:
            raise ValueError(f"default_model {self.default!r} is not one of the models "
                             f"({', '.join(self.models)})")
        for name, spec in self.models.items():
            if self.multiplexed:
                _nameable(name)
            if spec.engine == "synth" and name != SYNTH_MODEL:
                raise ValueError(f"model {name!r}: the synth engine's model is named "
                                 f"{SYNTH_MODEL!r}")
            if spec.engine in _MUSICGEN_ENGINES and spec.model is None \
                    and name.removeprefix(TRANSFORMERS_PREFIX) not in KNOWN_MODELS:
                raise ValueError(f"model {name!r}: give its checkpoint directory as 'model'")
        return self

    @classmethod
    def single(cls, name: str) -> ModelTable:
        """The table of a deployment that serves ``name`` only."""
        return cls(models={name: ServedModel(engine=engine_of(name), model=name)}, default=name)

    def engine_for(self, name: str) -> str:
        """The engine that runs served model ``name``."""
        return self.models[name].engine

    def resolve(self, engine: str | None, model: str | None) -> str:
        """The served model a request for ``engine``/``model`` runs on (None: the default).

        Raises ``UnsupportedError`` (400) ``model_not_served`` for a model not in the table,
        ``engine_not_served`` for an engine no served model (or not the requested one) runs.
        """
        if model is not None:
            if model not in self.models:
                raise UnsupportedError(f"model: this deployment serves {self._names()}, not "
                                       f"{model!r} (GET /v1/models lists them)",
                                       code="model_not_served")
            if engine is not None and engine != self.engine_for(model):
                raise UnsupportedError(f"engine: model {model!r} runs on "
                                       f"{self.engine_for(model)!r}, not {engine!r}",
                                       code="engine_not_served")
            return model
        if engine is None or engine == self.engine_for(self.default):
            return self.default
        for name in self.models:
            if self.engine_for(name) == engine:
                return name
        engines = sorted({s.engine for s in self.models.values()})
        raise UnsupportedError(f"engine: this deployment runs {' and '.join(map(repr, engines))}"
                               f", not {engine!r}", code="engine_not_served")

    def supports(self, name: str) -> ModelSupports:
        """What ``name`` can do as far as the config tells."""
        spec = self.models[name]
        if spec.engine == "synth":
            return ModelSupports(melody=False, continuation=False,
                                 max_duration_s=spec.max_duration_s)
        known = spec.engine in _MUSICGEN_ENGINES \
            and name.removeprefix(TRANSFORMERS_PREFIX) in KNOWN_MODELS
        return ModelSupports(melody=("melody" in name) if known else None,
                             continuation=True if spec.engine in _MUSICGEN_ENGINES else None,
                             max_duration_s=spec.max_duration_s)

    def _names(self) -> str:
        return ", ".join(repr(n) for n in self.models)


def _nameable(name: str) -> None:
    """ValueError unless a generation request may name ``name`` (an HF id, synth, local:x)."""
    try:
        parse_request({"prompt": "x", "duration_s": 1.0, "model": name}, Limits())
    except MusicfnError:
        raise ValueError(f"model name {name!r} is not one a request can use: a MusicGen id, "
                         f"{SYNTH_MODEL!r} or 'local:<label>'") from None


class ReplicaModels(BaseModel):
    """One MusicGen replica's answer to ``models()``: the table and what it holds now."""

    model_config = ConfigDict(frozen=True)

    replica_id: str
    table: ModelTable
    loaded: list[str]  # least recently used first
    # Facts of models this replica has loaded at least once (e.g. melody of a local checkpoint).
    seen: dict[str, ModelSupports] = {}


__all__ = ["ModelSupports", "ModelTable", "ReplicaModels", "ServedModel"]
