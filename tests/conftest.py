"""Shared fixtures: a real SeaweedFS S3 server and a real local Ray cluster, one per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import drop_test_buckets, free_port_block, make_settings, start_s3_server

__all__ = ["free_port_block", "make_settings", "start_s3_server"]

# Tests never talk to a configured production endpoint, and never through a proxy.
for _var in list(os.environ):
    if _var.startswith("MUSICFN_") or _var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del os.environ[_var]
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """One real SeaweedFS S3 server for the whole session."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def _drop_module_buckets() -> Iterator[None]:
    """Delete the module's test buckets once its tests (and module fixtures) are done."""
    yield
    drop_test_buckets()


@pytest.fixture
def settings(s3_server: EmbeddedS3, tmp_data: Path) -> Settings:
    """Settings for one test: the session S3 server, its own bucket and catalogue file."""
    return make_settings(s3_server, tmp_data)


@pytest.fixture
def objects(settings: Settings) -> ObjectStore:
    """An ObjectStore on the test's own (created) bucket."""
    store = ObjectStore(settings)
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real local Ray cluster (2 CPUs, no dashboard) shared by the whole session."""
    import ray
    from ray import serve

    from musicfn.priority import ray_worker_niceness_env

    # A fixed Prometheus export port, so tests can scrape the metrics (tests/test_metrics.py).
    metrics_port = free_port_block()
    ray_worker_niceness_env()  # as the service starts Ray (musicfn.priority)
    os.environ["MUSICFN_TEST_METRICS_URL"] = f"http://127.0.0.1:{metrics_port}/metrics"
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        _metrics_export_port=metrics_port,
        namespace="musicfn-tests",
        logging_level="WARNING",
        configure_logging=True,
    )
    # Serve's HTTP proxy is one per cluster: start it here, on loopback and a free port, so
    # whichever test deploys first cannot pick other options.
    port = free_port_block()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ["MUSICFN_TEST_SERVE_URL"] = f"http://127.0.0.1:{port}"
    try:
        yield ctx
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster: Any) -> str:
    """Base URL of the session's Serve HTTP proxy (127.0.0.1)."""
    return os.environ["MUSICFN_TEST_SERVE_URL"]


@pytest.fixture
def tmp_data(tmp_path: Path) -> Path:
    """A scratch data directory (catalogue files, downloads) for one test."""
    d = tmp_path / "data"
    d.mkdir()
    return d
