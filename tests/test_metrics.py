"""Metrics end to end: traffic against the deployed app (synth engine, SeaweedFS, DuckDB
owner), then the series at Ray's Prometheus endpoint, filtered to this app's replicas."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import make_settings
from tests.support.app import deployed_app
from tests.support.observability import Sample, replicas, total, wait_for_samples

pytestmark = [pytest.mark.ray]
APP = "metrics"
TRACK_ROUTE = "/v1/generations/{track_id}"


@pytest.fixture(scope="module")
def deployed(serve_url: str, s3_server: EmbeddedS3,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("metrics"), poller="off")
    with deployed_app(settings, APP, "/v-metrics", batch_wait_timeout_s=0.2) as url, \
            httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
        yield {"client": client, "settings": settings, "replicas": replicas(APP)}


@pytest.fixture(scope="module")
def traffic(deployed: dict[str, Any]) -> dict[str, Any]:
    """One generation with two stems (one batch of 2 jobs, 4 s of audio), reads, a 404 on a
    track route, an unmatched route, and an S3 error (audio object removed behind its back)."""
    api: httpx.Client = deployed["client"]
    r = api.post("/v1/generations", params={"wait": 90},
                 json={"prompt": "metrics beat", "duration_s": 2.0, "engine": "synth",
                       "stems": ["drums", "bass"], "bpm": 100})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["status"] == "completed", rec
    assert api.get(f"/v1/generations/{rec['id']}").status_code == 200
    assert api.get("/v1/generations/0000000000000000000000000z").status_code == 404
    assert api.get("/no/such/route/12345").status_code == 404
    ObjectStore(deployed["settings"]).delete(rec["record"]["audio_key"])
    gone = api.get(f"/v1/generations/{rec['id']}/audio", params={"inline": 1})
    assert gone.status_code in (404, 500, 503), gone.text
    workers = {name: {r["worker_id"] for r in reps}
               for name, reps in deployed["replicas"].items()}
    return {"record": rec, "ingress": workers["Ingress"], "engine": workers["MusicGen"],
            "runner": workers["JobRunner"]}


def _url() -> str:
    return os.environ["MUSICFN_TEST_METRICS_URL"]


def test_requests_by_route_template_and_status(traffic: dict[str, Any]) -> None:
    ingress = traffic["ingress"]
    expected = [
        ("/v1/generations", "POST", "200"),
        (TRACK_ROUTE, "GET", "200"),
        (TRACK_ROUTE, "GET", "404"),
        ("unmatched", "GET", "404"),
    ]

    def missing(samples: list[Sample]) -> list[str]:
        gaps = [f"requests {e}" for e in expected
                if total(samples, "ray_musicfn_requests_total", ingress, route=e[0],
                         method=e[1], status=e[2]) < 1]
        if total(samples, "ray_musicfn_request_seconds_count", ingress, route=TRACK_ROUTE,
                 method="GET") < 2:
            gaps.append("latency histogram of the track route")
        return gaps

    samples = wait_for_samples(_url(), missing)
    # Raw paths never become series: no route label holds a track id.
    routes = {s.labels.get("route") for s in samples
              if s.name == "ray_musicfn_requests_total"}
    assert not any(traffic["record"]["id"] in (r or "") for r in routes), routes
    buckets = [s for s in samples if s.name == "ray_musicfn_request_seconds_bucket"
               and s.labels.get("WorkerId") in ingress]
    assert {s.labels["le"] for s in buckets} >= {"0.01", "600.0", "+Inf"}


def test_engine_batches_audio_seconds_and_queue_depth(traffic: dict[str, Any]) -> None:
    engine = traffic["engine"]

    def missing(samples: list[Sample]) -> list[str]:
        gaps = []
        if total(samples, "ray_musicfn_batch_size_count", engine) < 1:
            gaps.append("batch size")
        if total(samples, "ray_musicfn_audio_seconds_total", engine, engine="synth") < 4.0:
            gaps.append("audio seconds")
        if not any(s.name == "ray_musicfn_queue_depth" and s.labels.get("WorkerId") in engine
                   for s in samples):
            gaps.append("queue depth")
        return gaps

    samples = wait_for_samples(_url(), missing)
    # Both stems of the request ran as one batch of 2: the le=2 bucket has it, le=1 not.
    assert total(samples, "ray_musicfn_batch_size_bucket", engine, le="1.0") == 0
    assert total(samples, "ray_musicfn_batch_size_bucket", engine, le="2.0") >= 1
    assert total(samples, "ray_musicfn_audio_seconds_total", engine,
                 engine="synth") == pytest.approx(4.0, abs=0.01)
    assert total(samples, "ray_musicfn_queue_depth", engine, deployment="MusicGen") == 0


def test_s3_errors(traffic: dict[str, Any]) -> None:
    ingress = traffic["ingress"]
    wait_for_samples(_url(), lambda samples: [] if total(
        samples, "ray_musicfn_s3_errors_total", ingress, operation="get",
        code="NoSuchKey") >= 1 else ["s3 error get/NoSuchKey"])


def test_stage_histograms(traffic: dict[str, Any]) -> None:
    runner = traffic["runner"]  # jobs run in the JobRunner, not in the ingress
    wait_for_samples(_url(), lambda samples: [] if total(
        samples, "ray_musicfn_stage_seconds_count", runner, stage="generate") >= 1
        else ["stage generate"])


def test_request_id_header(deployed: dict[str, Any]) -> None:
    api: httpx.Client = deployed["client"]
    mine = api.get("/healthz", headers={"X-Request-Id": "client-chosen.id:42"})
    assert mine.headers.get_list("x-request-id") == ["client-chosen.id:42"]
    made = api.get("/healthz")
    assert len(made.headers.get_list("x-request-id")) == 1
    bad = api.get("/healthz", headers={"X-Request-Id": "x" * 300})
    ids = bad.headers.get_list("x-request-id")
    # A fresh id replaced it (Serve's proxy still echoes the raw one after ours).
    assert len(ids[0]) == 32 and int(ids[0], 16) >= 0, ids


def test_no_op_without_ray_and_never_imports_it() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom musicfn import metrics\n"
            "metrics.record_request('/x', 'get', 200, 0.1)\nmetrics.record_stage('g', 1.0)\n"
            "metrics.record_event('processed', 'poll')\nmetrics.record_s3_error('put', '500')\n"
            "metrics.set_queue_depth('MusicGen', 3)\nmetrics.record_batch(2)\n"
            "metrics.record_audio_seconds('synth', 4.0)\n"
            "assert 'ray' not in sys.modules, 'metrics imported ray'\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_odd_values_never_raise_in_a_ray_process(ray_cluster: Any) -> None:
    from musicfn import metrics

    metrics.record_request("", "", 0, -1.0)
    metrics.record_stage("generate", float("nan"))
    metrics.record_event("", "")
    metrics.record_s3_error("get", "")
    metrics.set_queue_depth("MusicGen", -5)
    metrics.record_batch(0)
    metrics.record_audio_seconds("synth", float("nan"))
    metrics.record_audio_seconds("synth", -1.0)
