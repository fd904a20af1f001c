"""Helpers for the observability tests: Serve replica details and Prometheus scrapes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample."""

    name: str
    labels: dict[str, str]
    value: float


def replicas(app_name: str) -> dict[str, list[dict[str, Any]]]:
    """The running replicas of each deployment of ``app_name`` in the session cluster
    (replica_id, pid, worker_id, log_file_path, …), from the Serve controller."""
    from ray.serve.context import _get_global_client

    client: Any = _get_global_client()
    details = client.get_serve_details()
    app = details["applications"][app_name]
    return {name: [r for r in dep["replicas"] if r["state"] == "RUNNING"]
            for name, dep in app["deployments"].items()}


def scrape(url: str) -> list[Sample]:
    """Every sample at the Prometheus endpoint ``url`` (empty when it does not answer)."""
    try:
        text = httpx.get(url, timeout=10, trust_env=False).text
    except httpx.HTTPError:
        return []
    return [Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def wait_for_samples(url: str, check: Callable[[list[Sample]], list[str]],
                     timeout_s: float = 120.0) -> list[Sample]:
    """Scrape until ``check`` reports nothing missing (Ray exports every few seconds)."""
    deadline = time.monotonic() + timeout_s
    missing: list[str] = ["no scrape yet"]
    while time.monotonic() < deadline:
        samples = scrape(url)
        missing = check(samples)
        if not missing:
            return samples
        time.sleep(2)
    raise AssertionError(f"metrics missing at {url} after {timeout_s:.0f} s: {missing}")


def total(samples: list[Sample], name: str, workers: set[str] | None = None,
          **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels`` (and, with
    ``workers``, whose WorkerId is one of them)."""
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
               and (workers is None or s.labels.get("WorkerId") in workers))
