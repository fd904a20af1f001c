"""musicfn's metrics (``ray.util.metrics``): visible in the Ray dashboard and at the Prometheus
endpoint. Every function is safe to call anywhere; outside a Ray worker it does nothing.

Ray exports application metrics with a ``ray_`` prefix, counters with ``_total``:

===========================================  ==============================  ===================
Prometheus name                              tags                            recorded by
===========================================  ==============================  ===================
``ray_musicfn_requests_total``               route, method, status           ingress middleware
``ray_musicfn_request_seconds``              route, method                   ingress middleware
``ray_musicfn_stage_seconds``                stage                           generation pipeline
``ray_musicfn_events_total``                 outcome, source                 event handler
``ray_musicfn_s3_errors_total``              operation, code                 ``ObjectStore``
``ray_musicfn_queue_depth``                  deployment                      MusicGen replicas
``ray_musicfn_batch_size``                   (none)                          MusicGen replicas
``ray_musicfn_audio_seconds_total``          engine                          MusicGen replicas
``ray_musicfn_embedded_s3_restarts_total``   outcome (ok, failed)            ``musicfn run``
===========================================  ==============================  ===================

``route`` is the route template (``/v1/generations/{track_id}``), never a raw path, so the
number of series stays bounded. Each process exports its own series (Ray adds ``WorkerId``);
sum over it in queries. Metric objects are created lazily, once per process, on first use.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Seconds, from 10 ms (a cached GET) to 10 min (the longest long-form generation).
SECONDS_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                      120.0, 300.0, 600.0]
BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]

# name -> (kind, description, tag keys, histogram boundaries)
_SPECS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "musicfn_requests": ("counter", "HTTP requests answered by the ingress",
                         ("route", "method", "status"), None),
    "musicfn_request_seconds": ("histogram", "HTTP request latency at the ingress (s)",
                                ("route", "method"), SECONDS_BOUNDARIES),
    "musicfn_stage_seconds": ("histogram", "Duration of one pipeline stage (s)",
                              ("stage",), SECONDS_BOUNDARIES),
    "musicfn_events": ("counter", "Object-store events handled, by outcome",
                       ("outcome", "source"), None),
    "musicfn_s3_errors": ("counter", "Failed S3 calls (after botocore's retries)",
                          ("operation", "code"), None),
    "musicfn_queue_depth": ("gauge", "Jobs waiting or running in a deployment replica",
                            ("deployment",), None),
    "musicfn_batch_size": ("histogram", "Jobs per generation batch", (), BATCH_BOUNDARIES),
    "musicfn_audio_seconds": ("counter", "Seconds of audio generated", ("engine",), None),
    "musicfn_embedded_s3_restarts": ("counter", "Restarts of the embedded SeaweedFS after it "
                                     "died, by outcome", ("outcome",), None),
}

_metrics: dict[str, Any] = {}
_lock = threading.Lock()
_failed: set[str] = set()


def _ray_ready() -> bool:
    """True when this process is connected to Ray (a worker, or a driver after ray.init)."""
    ray = sys.modules.get("ray")  # never import Ray just to find out it is not running
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:
        return False


def _metric(name: str) -> Any | None:
    """The metric object ``name`` in this process, created on first use (None if unusable)."""
    found = _metrics.get(name)
    if found is not None:
        return found
    if not _ray_ready():
        return None
    with _lock:
        found = _metrics.get(name)
        if found is None:
            from ray.util import metrics as ray_metrics

            kind, description, tags, boundaries = _SPECS[name]
            if kind == "counter":
                found = ray_metrics.Counter(name, description=description, tag_keys=tags)
            elif kind == "gauge":
                found = ray_metrics.Gauge(name, description=description, tag_keys=tags)
            else:
                found = ray_metrics.Histogram(name, description=description,
                                              boundaries=boundaries or SECONDS_BOUNDARIES,
                                              tag_keys=tags)
            _metrics[name] = found
    return found


def _safely(name: str, action: Callable[[Any], None]) -> None:
    """Apply ``action`` to metric ``name``; metrics never break the work they describe."""
    try:
        metric = _metric(name)
        if metric is not None:
            action(metric)
    except Exception:
        if name not in _failed:  # say it once per metric and process, not per call
            _failed.add(name)
            log.warning("metric %s could not be recorded", name, exc_info=True)


def _tag(value: object) -> str:
    text = str(value)
    return text if text else "none"


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """One HTTP request answered by the ingress."""
    tags = {"route": _tag(route), "method": _tag(method).upper()}
    _safely("musicfn_requests", lambda m: m.inc(1, tags={**tags, "status": str(int(status))}))
    _safely("musicfn_request_seconds", lambda m: m.observe(max(0.0, seconds), tags=tags))


def record_stage(stage: str, seconds: float) -> None:
    """One pipeline stage finished (generate, normalize, analyze, encode, upload, index)."""
    _safely("musicfn_stage_seconds",
            lambda m: m.observe(max(0.0, seconds), tags={"stage": _tag(stage)}))


def record_event(outcome: str, source: str) -> None:
    """One object-store event handled: processed | duplicate | rejected | failed | dlq."""
    _safely("musicfn_events",
            lambda m: m.inc(1, tags={"outcome": _tag(outcome), "source": _tag(source)}))


def record_s3_error(operation: str, code: str) -> None:
    """One failed S3 call (after botocore's own retries)."""
    _safely("musicfn_s3_errors",
            lambda m: m.inc(1, tags={"operation": _tag(operation), "code": _tag(code)}))


def set_queue_depth(deployment: str, depth: int) -> None:
    """Requests waiting in a deployment's queue."""
    _safely("musicfn_queue_depth",
            lambda m: m.set(max(0, depth), tags={"deployment": _tag(deployment)}))


def record_batch(size: int) -> None:
    """One generation batch run by the engine."""
    _safely("musicfn_batch_size", lambda m: m.observe(max(0, size)))


def record_audio_seconds(engine: str, seconds: float) -> None:
    """Seconds of audio generated."""
    if seconds > 0:
        _safely("musicfn_audio_seconds",
                lambda m: m.inc(seconds, tags={"engine": _tag(engine)}))


def record_embedded_s3_restart(outcome: str) -> None:
    """One restart of the embedded S3 by its supervisor: ``ok`` or ``failed``."""
    _safely("musicfn_embedded_s3_restarts",
            lambda m: m.inc(1, tags={"outcome": _tag(outcome)}))
