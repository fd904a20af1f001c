"""Helpers shared by tests: throwaway S3 servers, per-test settings (and ``free_port_block``,
from ``musicfn.ports``)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

from musicfn.ports import free_port_block
from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3

S3_ACCESS_KEY = "musicfn-test"
S3_SECRET_KEY = "musicfn-test-secret"


def start_s3_server(data_dir: Path) -> EmbeddedS3:
    """A real SeaweedFS on a free port block (5 ports + their gRPC block) under ``data_dir``."""
    port = free_port_block(5, gap=10000)
    return EmbeddedS3(data_dir, port, S3_ACCESS_KEY, S3_SECRET_KEY).start()


# Buckets handed out by make_settings, dropped when their test module ends (conftest): each
# bucket holds at least one SeaweedFS volume, and a long session would otherwise use them up.
_TEST_BUCKETS: list[tuple[EmbeddedS3, str]] = []


def make_settings(server: EmbeddedS3, data_dir: Path, **overrides: Any) -> Settings:
    """Settings pointing at ``server`` with a fresh bucket and a catalogue under ``data_dir``."""
    values: dict[str, Any] = {
        "embedded_s3_port": server.port,
        "embedded_s3_dir": server.data_dir,
        "s3_access_key": S3_ACCESS_KEY,
        "s3_secret_key": S3_SECRET_KEY,
        "bucket": f"t-{uuid.uuid4().hex[:16]}",
        "data_dir": data_dir,
        "s3_max_attempts": 2,
        "s3_connect_timeout_s": 1.0,
        "s3_read_timeout_s": 5.0,
    }
    values.update(overrides)
    _TEST_BUCKETS.append((server, values["bucket"]))
    return Settings(**values)


def drop_test_buckets() -> None:
    """Delete every bucket ``make_settings`` handed out on a server still running (SeaweedFS
    deletes a bucket with its objects and frees its volumes); best effort."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    pending, _TEST_BUCKETS[:] = list(_TEST_BUCKETS), []
    for server, bucket in pending:
        if not server.is_running():
            continue
        client = boto3.session.Session().client(
            "s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=10))
        with contextlib.suppress(BotoCoreError, ClientError):
            client.delete_bucket(Bucket=bucket)


def musicfn_env(settings: Settings) -> dict[str, str]:
    """``MUSICFN_*`` variables for a CLI command on the same S3, bucket, catalogue and Ray
    namespace as ``settings``."""
    return {
        "MUSICFN_EMBEDDED_S3_PORT": str(settings.embedded_s3_port),
        "MUSICFN_EMBEDDED_S3_DIR": str(settings.embedded_s3_data),
        "MUSICFN_S3_ACCESS_KEY": settings.access_key,
        "MUSICFN_S3_SECRET_KEY": settings.secret_key,
        "MUSICFN_BUCKET": settings.bucket,
        "MUSICFN_DATA_DIR": str(settings.data_dir),
        "MUSICFN_RAY_NAMESPACE": settings.ray_namespace,
    }


def cli_env(settings: Settings, ray_cluster: Any, **extra: str) -> dict[str, str]:
    """The environment of a ``musicfn`` subprocess attached to the test cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICFN_")}
    env.update(musicfn_env(settings), RAY_ADDRESS=ray_cluster.address_info["gcs_address"],
               **extra)
    return env


def lean_get(conn: Any, target: str, host: str) -> tuple[int, bytes, bool]:
    """GET ``target`` on a ``storage.http_lean.LeanConnection``: (status, body, reusable)."""
    status, _, body, reusable = conn.request("GET", target, {"Host": host})
    return status, body, reusable
