"""Long form over HTTP: durations beyond MusicGen's 30 s window, up to the effective cap.

The cap is min(the live ``user_config.limits.max_duration_s``, the engine's own long-form cap
``max_long_form_s``); the ingress enforces it and reports it in the OpenAPI document. Progress
moves window by window in the job's SSE stream (the runner polls the engine's fraction and its
heartbeat carries it; leases are 3 s here, so a heartbeat every second). Real Serve, SeaweedFS,
DuckDB and the tiny random-weight MusicGen.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from functions.decode import decode_audio
from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings
from tests.support.tiny_app import TinyApp, deploy_tiny_app, teardown_tiny_app

pytestmark = [pytest.mark.ray]
LIVE_LIMIT_S = 40.0  # user_config.limits.max_duration_s, raised for the test
ENGINE_CAP_S = 36.0  # the engine's long-form cap (max_long_form_s)
SR = 32_000


@pytest.fixture(scope="module")
def app(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyApp]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("long"), job_lease_s=3.0,
                             job_poll_interval_s=0.5,
                             ray_namespace=f"long-{uuid.uuid4().hex[:8]}")
    deployed = deploy_tiny_app("long-form", settings, max_duration_s=LIVE_LIMIT_S,
                               max_long_form_s=ENGINE_CAP_S)
    yield deployed
    teardown_tiny_app(deployed)


def test_the_effective_cap_is_the_lower_of_live_limit_and_engine_cap(app: TinyApp) -> None:
    import time

    # The ingress caches the live limits for a few seconds (the defaults until its first
    # answer from the engine, which a loaded box may take a while to give).
    deadline = time.monotonic() + 120
    while True:
        doc = app.client.get("/openapi.json").json()
        maximum = doc["components"]["schemas"]["GenerationBody"]["properties"][
            "duration_s"]["maximum"]
        if maximum == ENGINE_CAP_S or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert maximum == ENGINE_CAP_S
    r = app.client.post("/v1/generations", json={"prompt": "too long", "duration_s": 37.0})
    assert (r.status_code, r.json()["code"]) == (400, "duration_limit")
    assert "36" in r.json()["message"]


def _status_frames(app: TinyApp, track_id: str) -> list[dict[str, object]]:
    frames = []
    with app.client.stream("GET", f"/v1/generations/{track_id}/events",
                           timeout=600) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "status":
                frames.append(json.loads(line.removeprefix("data: ")))
    return frames


def test_long_form_beyond_one_window_with_progress_window_by_window(app: TinyApp) -> None:
    r = app.client.post("/v1/generations", json={"prompt": "a long ambient drift",
                                                 "duration_s": 33.0, "seed": 3})
    assert r.status_code == 202, r.text
    track_id = r.json()["id"]
    frames = _status_frames(app, track_id)
    assert frames[-1]["status"] == "completed", frames[-1]
    progress = [float(f["progress"]) for f in frames if f["progress"] is not None]
    assert progress == sorted(progress), progress  # never steps back
    # Frames during generation (between the generate and postprocess stage marks, 0.05
    # and 0.8) that rise: across both windows (0-30 s, then 18-33 s), not stuck at one.
    generating = sorted({p for p in progress if 0.05 < p < 0.8})
    print(f"progress frames: {[round(p, 3) for p in progress]}")
    assert len(generating) >= 3, progress
    assert generating[-1] > 0.5, progress  # the second window is reported too
    audio = app.client.get(f"/v1/generations/{track_id}/audio", params={"inline": 1})
    decoded = decode_audio(audio.content)
    assert decoded.sample_rate == SR and decoded.audio.shape[1] == 33 * SR
