"""The web page at ``/``: static files shipped in ``deployments/static`` (no build step)."""

from __future__ import annotations

from fastapi import FastAPI


def mount_web(app: FastAPI) -> None:
    """Add the page's routes to ``app`` (the ingress FastAPI app)."""
