"""The engines one MusicGen replica holds: one loaded at start, or an LRU of multiplexed ones.

Single-model config (``ModelTable.multiplexed`` False): the model is loaded in the replica's
constructor, as it always was, and is the only one served.

Several models: Ray Serve model multiplexing. ``get(name)`` goes through a
``serve.multiplexed(max_num_models_per_replica=N)`` loader: a model is loaded on its first
request (lazily), at most N per replica, the least recently used unloaded first; Serve learns
which replica holds which model and routes requests sent with
``handle.options(multiplexed_model_id=name)`` to a replica that already holds it. The loader is
built per replica (the decorator's N is fixed when it is applied, and N comes from the config).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ray import serve

from deployments.served_models import ModelSupports, ModelTable, ReplicaModels, ServedModel
from engines.base import Engine, EngineInfo
from engines.loader import EngineSpec, load_engine, parse_spec
from musicfn.errors import UnsupportedError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedModel:
    """A served model's engine in this replica. Serve calls ``__del__`` when it evicts it."""

    name: str
    engine: Engine
    info: EngineInfo
    load_time_s: float
    on_unload: Callable[[str], None] | None = None
    _unloaded: bool = field(default=False, repr=False)

    def __del__(self) -> None:
        """Eviction (Serve calls this from a worker thread) or garbage collection: report once."""
        if not self._unloaded and self.on_unload is not None:
            self._unloaded = True
            self.on_unload(self.name)


def _load(name: str, spec: EngineSpec) -> LoadedModel:
    started = time.perf_counter()
    engine = load_engine(spec)
    info = engine.describe()
    took = time.perf_counter() - started
    log.info("loaded model %s (%s) in %.2f s", name, info, took)
    return LoadedModel(name=name, engine=engine, info=info, load_time_s=took)


def _facts(engine: Engine) -> ModelSupports:
    sup = engine.supports
    return ModelSupports(melody=sup.melody, continuation=sup.continuation,
                         max_duration_s=sup.max_duration_s)


class ModelPool:
    """The replica's models: ``get`` one by name, ``report`` what is loaded."""

    def __init__(self, table: ModelTable | None, *, spec: EngineSpec) -> None:
        """``table`` None: load ``spec`` now and serve it alone (named by its engine's label).
        Otherwise serve ``table``'s models lazily with ``spec``'s device."""
        self._device = spec.device
        # What is loaded, least recently used first (Serve's multiplexer holds the same set).
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # evictions are reported from Serve's worker thread
        self._seen: dict[str, ModelSupports] = {}
        self._single: LoadedModel | None = None
        self._loader: Callable[[str], Awaitable[LoadedModel]] | None = None
        if table is None or not table.multiplexed:
            single = _load("", spec)
            name = single.info.model
            single.name = name
            self._single = single
            self.table = ModelTable(models={name: ServedModel(
                engine=spec.engine, model=spec.model, max_duration_s=spec.max_duration_s)},
                default=name)
            self._mark_loaded(single)
            return
        self.table = table

        async def load(model_id: str) -> LoadedModel:
            loaded = await asyncio.to_thread(_load, model_id, self.spec_of(model_id))
            loaded.on_unload = self._mark_unloaded
            self._mark_loaded(loaded)
            return loaded

        self._loader = serve.multiplexed(max_num_models_per_replica=table.max_models_per_replica)(
            load)

    @property
    def default(self) -> str:
        """The model a request without one runs on."""
        return self.table.default

    def spec_of(self, name: str) -> EngineSpec:
        """The engine spec ``load_engine`` gets for served model ``name``."""
        served = self.table.models[name]
        return parse_spec({"engine": served.engine, "model": served.model or name,
                           "device": self._device, "max_duration_s": served.max_duration_s
                           or EngineSpec().max_duration_s})

    async def get(self, name: str) -> LoadedModel:
        """Served model ``name``, loaded if needed (evicting the least recently used one).

        Raises ``UnsupportedError`` ``model_not_served`` for a name not in the table.
        """
        if name not in self.table.models:
            raise UnsupportedError(
                f"this deployment serves {', '.join(map(repr, self.table.models))}, not "
                f"{name!r}", code="model_not_served")
        if self._single is not None:
            return self._single
        if self._loader is None:  # unreachable: one of the two is always set
            raise UnsupportedError(f"no loader for {name!r}", code="model_not_served")
        loaded = await self._loader(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
        return loaded

    def loaded(self) -> list[str]:
        """The models loaded here, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def peek(self, name: str) -> LoadedModel | None:
        """Model ``name`` if loaded here, without loading it or making it recently used."""
        with self._lock:
            return self._loaded.get(name)

    def engines(self) -> list[Engine]:
        """The engines loaded here."""
        with self._lock:
            return [m.engine for m in self._loaded.values()]

    def report(self) -> ReplicaModels:
        """This replica's id, the table and what it holds now."""
        try:
            replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (never in Serve)
            replica_id = "local"
        with self._lock:
            seen = dict(self._seen)
        return ReplicaModels(replica_id=replica_id, table=self.table, loaded=self.loaded(),
                             seen=seen)

    def single(self) -> LoadedModel | None:
        """The model loaded at start (single-model config), else None."""
        return self._single

    def _mark_loaded(self, loaded: LoadedModel) -> None:
        with self._lock:
            self._loaded[loaded.name] = loaded
            self._loaded.move_to_end(loaded.name)
            self._seen[loaded.name] = _facts(loaded.engine)

    def _mark_unloaded(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)
        log.info("unloaded model %s (least recently used)", name)


__all__ = ["LoadedModel", "ModelPool"]
