"""musicfn's metrics (``ray.util.metrics``): visible in the Ray dashboard and at the Prometheus
endpoint. Every function is safe to call anywhere; outside a Ray worker it does nothing."""

from __future__ import annotations


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """One HTTP request answered by the ingress."""


def record_stage(stage: str, seconds: float) -> None:
    """One pipeline stage finished (generate, normalize, analyze, encode, upload, index)."""


def record_event(outcome: str, source: str) -> None:
    """One object-store event handled: processed | duplicate | rejected | failed | dlq."""


def record_s3_error(operation: str, code: str) -> None:
    """One failed S3 call (after botocore's own retries)."""


def set_queue_depth(deployment: str, depth: int) -> None:
    """Requests waiting in a deployment's queue."""


def record_batch(size: int) -> None:
    """One generation batch run by the engine."""


def record_audio_seconds(engine: str, seconds: float) -> None:
    """Seconds of audio generated."""
