"""HTTP observability for the ingress: per-route request metrics and request ids in logs."""

from __future__ import annotations

from fastapi import FastAPI


def install_request_metrics(app: FastAPI) -> None:
    """Count requests by route and status and time them (``musicfn.metrics``)."""
