"""Admission in front of the engine, and engine calls that ride out replica loss and backpressure.

``AdmissionGate`` bounds the generation jobs in flight in one ingress replica. A POST beyond it
gets 503 ``queue_full`` with ``Retry-After`` at once, before any catalogue row is written, so a
rejected request leaves nothing behind. Set the bound to what the engine deployment can hold
(replicas × ``max_ongoing_requests`` + ``max_queued_requests``) divided over ingress replicas.

``EngineClient`` is what the pipeline calls for an accepted job. An accepted job must not fail
because the engine is momentarily full or a replica died, so its call is retried:

* Serve's ``BackPressureError`` (the handle's queue is at ``max_queued_requests``, e.g. with
  several ingress replicas) and the replica's own ``queue_full`` / out-of-memory
  (``EngineOverloadedError``): wait with backoff, up to ``overload_wait_s``;
* the replica died or became unreachable (killed, failed health check, node lost): retried on
  another replica (Serve starts a replacement), up to ``replica_loss_attempts`` times. Safe:
  nothing is stored before the engine returns.

Whatever still fails becomes an ``EngineError`` with a clear code (``engine_unavailable``,
``queue_full``) in the job's failed row.

A ``generate`` call for a request that names its model is sent with
``handle.options(multiplexed_model_id=<model>)``: with several models per MusicGen deployment
(Serve model multiplexing) Serve routes it to a replica that already holds that model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from musicfn.errors import EngineError, EngineOverloadedError, original_error

log = logging.getLogger(__name__)


class AdmissionGate:
    """A counter of jobs in flight with a hard limit (one asyncio loop: no lock needed)."""

    def __init__(self, limit: int, *, retry_after_s: int = 5) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def admit(self) -> None:
        """Take a slot, or raise EngineOverloadedError (HTTP 503 + Retry-After)."""
        if self.in_flight >= self.limit:
            raise EngineOverloadedError(
                f"{self.in_flight} generations in flight (limit {self.limit}); retry in "
                f"{self.retry_after_s} s", code="queue_full")
        self.in_flight += 1

    def release(self) -> None:
        """Give a slot back (when the job has finished, or was never started)."""
        self.in_flight = max(0, self.in_flight - 1)


def _is_backpressure(exc: BaseException) -> bool:
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError | EngineOverloadedError):
        return True
    original = original_error(exc)
    return isinstance(original, EngineOverloadedError)


def model_of(request: Any) -> str | None:
    """The model a generation request (a ``GenerationRequest`` or its dict) names, if any."""
    model = request.get("model") if isinstance(request, Mapping) else getattr(
        request, "model", None)
    return model if isinstance(model, str) and model else None


def _is_replica_lost(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError

    cause = getattr(exc, "cause", None)
    return isinstance(exc, RayActorError) or isinstance(cause, RayActorError)


class _Method:
    """``client.generate.remote(...)``: the DeploymentHandle call shape, retried."""

    def __init__(self, client: EngineClient, name: str) -> None:
        self._client = client
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.call(self._name, *args, **kwargs)


class EngineClient:
    """Wraps the engine's DeploymentHandle for calls that must survive transient faults."""

    def __init__(self, handle: Any, *, overload_wait_s: float = 300.0,
                 replica_loss_attempts: int = 3, first_delay_s: float = 0.25,
                 max_delay_s: float = 5.0) -> None:
        self.handle = handle
        self.overload_wait_s = overload_wait_s
        self.replica_loss_attempts = replica_loss_attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.generate = _Method(self, "generate")

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``handle.<method>.remote(*args, **kwargs)``, awaited and retried (see module)."""
        deadline = time.monotonic() + self.overload_wait_s
        delay = self.first_delay_s
        lost = 0
        handle = self.handle
        model = model_of(args[0]) if method == "generate" and args else None
        if model is not None:  # Serve routes to a replica holding the model (multiplexing)
            handle = handle.options(multiplexed_model_id=model)
        while True:
            try:
                return await getattr(handle, method).remote(*args, **kwargs)
            except Exception as exc:
                if _is_replica_lost(exc):
                    lost += 1
                    if lost > self.replica_loss_attempts:
                        raise EngineError(
                            f"engine replica lost {lost} times during {method}: "
                            f"{type(exc).__name__}", code="engine_unavailable") from None
                    log.warning("engine replica lost during %s (%s); retrying on another "
                                "replica", method, type(exc).__name__)
                elif _is_backpressure(exc):
                    if time.monotonic() + delay > deadline:
                        raise EngineOverloadedError(
                            f"engine still full after {self.overload_wait_s:g} s",
                            code="queue_full") from None
                    log.info("engine full during %s; retrying in %.2f s", method, delay)
                else:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay_s)
