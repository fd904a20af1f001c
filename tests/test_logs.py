"""JSON-lines logs: the formatter itself, and a job's id in the lines the deployed ingress and
its storage work write into the Ray session's worker logs."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from musicfn.logs import (
    PROJECT_LOGGERS,
    configure_json_logging,
    current_job_id,
    current_request_id,
    job_context,
    request_context,
)
from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings
from tests.support.app import deployed_app


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    """JSON logging of the project loggers into a buffer; their old setup restored after."""
    saved = [(logging.getLogger(n), list(logging.getLogger(n).handlers),
              logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in PROJECT_LOGGERS]
    buf = io.StringIO()
    configure_json_logging("DEBUG", stream=buf)
    try:
        yield buf
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_ids_and_exceptions_on_one_line(json_stream: io.StringIO) -> None:
    log = logging.getLogger("storage.objects")
    log.info("outside")
    with request_context("req-1"), job_context("01jobid"):
        assert (current_request_id(), current_job_id()) == ("req-1", "01jobid")
        log.warning("inside %s", "args", extra={"bucket": "b1", "obj": object()})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")
    assert current_job_id() is None and current_request_id() is None
    raw = json_stream.getvalue().splitlines()
    assert len(raw) == 3  # the traceback did not add lines
    outside, inside, failed = _lines(json_stream)
    assert outside["message"] == "outside" and "job_id" not in outside
    assert {"ts", "level", "logger", "message", "pid"} <= outside.keys()
    assert outside["ts"].endswith("Z") and outside["logger"] == "storage.objects"
    assert inside["message"] == "inside args" and inside["level"] == "WARNING"
    assert (inside["job_id"], inside["request_id"], inside["bucket"]) == \
        ("01jobid", "req-1", "b1")
    assert "obj" not in inside  # only simple extras
    assert failed["exc_type"] == "ValueError" and "boom\nsecond line" in failed["exc"]
    assert "Traceback" in failed["exc"]


def test_configure_twice_keeps_one_handler(json_stream: io.StringIO) -> None:
    configure_json_logging("INFO", stream=json_stream)
    logging.getLogger("jobs.pipeline").info("once")
    assert [e["message"] for e in _lines(json_stream)] == ["once"]
    ours = [h for h in logging.getLogger("deployments").handlers
            if h.get_name() == "musicfn-json"]
    assert len(ours) == 1


# -- in the deployed service -------------------------------------------------------------

@pytest.fixture(scope="module")
def api(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("logs"), poller="off")
    with deployed_app(settings, "logs", "/v-logs", batch_wait_timeout_s=0.01) as url, \
            httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
        yield client


def _session_log_lines(job_id: str) -> list[dict[str, Any]]:
    import ray

    node: Any = ray._private.worker._global_node
    logs_dir = Path(node.get_logs_dir_path())
    found = []
    for path in logs_dir.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if job_id in line and line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
    return found


@pytest.mark.ray
def test_job_id_in_ingress_and_storage_lines(api: httpx.Client) -> None:
    request_id = f"logs-{uuid.uuid4().hex[:12]}"
    r = api.post("/v1/generations", params={"wait": 90}, headers={"X-Request-Id": request_id},
                 json={"prompt": "logged beat", "duration_s": 2.0, "engine": "synth"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == request_id
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        lines = _session_log_lines(job_id)
        by_logger = {e["logger"]: e for e in lines if e.get("job_id") == job_id}
        if {"deployments.api.generations", "storage.objects"} <= by_logger.keys():
            break
        assert time.monotonic() < deadline, f"JSON lines of job {job_id}: {lines}"
        time.sleep(1)
    accepted = by_logger["deployments.api.generations"]
    assert accepted["message"].startswith("job accepted") and accepted["level"] == "INFO"
    assert accepted["request_id"] == request_id
    stored = [e for e in lines if e["logger"] == "storage.objects"]
    # The job's runner wrote audio then sidecar, both with the job's and the request's ids.
    assert [e["message"].rsplit(".", 1)[-1].split()[0] for e in stored] == ["wav", "json"]
    assert all(e["job_id"] == job_id and e["request_id"] == request_id for e in stored)
    assert all(job_id in e["message"] for e in stored)


@pytest.mark.ray
def test_function_task_workers_log_json(ray_cluster: Any) -> None:
    import os

    import ray

    @ray.remote
    def probe(marker: str) -> int:
        # What a worker running the functions' tasks does: import functions.tasks (the task
        # definitions live there), then log.
        import functions.tasks  # noqa: F401

        logging.getLogger("functions.probe").warning("probe %s", marker)
        return os.getpid()

    marker = f"probe-{uuid.uuid4().hex}"
    pid = ray.get(probe.remote(marker))
    deadline = time.monotonic() + 30
    while not (lines := [e for e in _session_log_lines(marker)
                         if e["logger"] == "functions.probe"]):
        assert time.monotonic() < deadline, f"no JSON line with {marker}"
        time.sleep(1)
    assert lines[0]["pid"] == pid and lines[0]["message"] == f"probe {marker}"
    assert lines[0]["level"] == "WARNING"
