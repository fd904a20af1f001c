"""The HTTP ingress over real HTTP through Ray Serve: synth engine, SeaweedFS, DuckDB owner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from functions.decode import decode_audio
from functions.loudness import measure_loudness
from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings
from tests.support.app import deployed_app

pytestmark = [pytest.mark.ray]
API_KEY = "test-api-key"
MAX_UPLOAD = 2_000_000
AUTH = {"x-api-key": API_KEY}


@pytest.fixture(scope="module")
def api(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:


    data = tmp_path_factory.mktemp("ingress")
    settings = make_settings(s3_server, data, api_key=API_KEY, max_upload_bytes=MAX_UPLOAD,
                             callback_allow_private=True)
    with deployed_app(settings, "ingress", "/v-test", batch_wait_timeout_s=0.01) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        yield client


def generate(api: httpx.Client, wait: float = 90, **body: Any) -> httpx.Response:
    payload = {"prompt": "warm lofi beat with vinyl crackle", "duration_s": 8.0,
               "engine": "synth", "bpm": 90, **body}
    return api.post("/v1/generations", params={"wait": wait}, json=payload, headers=AUTH)


def test_round_trip(api: httpx.Client, tmp_path: Path) -> None:
    r = generate(api, loudness={"preset": "podcast"}, seed=7)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["status"] == "completed" and rec["progress"] == 1.0
    assert r.headers["location"] == f"/v1/generations/{rec['id']}"
    sc = rec["record"]
    assert sc["engine"] == "synth" and sc["seed"] == 7
    assert sc["audio_key"].startswith(f"generations/{sc['created_at'][:10].replace('-', '/')}/")
    # The presigned URL serves the WAV: right duration, loudness target.
    wav = httpx.get(rec["audio_url"]).content
    decoded = decode_audio(wav)
    assert decoded.audio.shape[1] / decoded.sample_rate == pytest.approx(8.0, abs=0.01)
    lufs = measure_loudness(decoded.audio, decoded.sample_rate).integrated_lufs
    assert lufs is not None and abs(lufs + 16.0) <= 0.5
    # GET, audio redirect / inline, waveform.
    got = api.get(f"/v1/generations/{rec['id']}", headers=AUTH).json()
    assert got["record"] == sc and "waveform" not in sc["analysis"]  # peaks only when asked
    full = api.get(f"/v1/generations/{rec['id']}", params={"include": "waveform"},
                   headers=AUTH).json()
    redirect = api.get(f"/v1/generations/{rec['id']}/audio", headers=AUTH)
    assert redirect.status_code == 307 and "X-Amz-Signature" in redirect.headers["location"]
    inline = api.get(f"/v1/generations/{rec['id']}/audio", params={"inline": 1}, headers=AUTH)
    assert inline.content == wav
    wave = api.get(f"/v1/generations/{rec['id']}/waveform", headers=AUTH).json()
    assert wave["version"] == 2 and wave["data"]
    assert full["record"]["analysis"]["waveform"] == wave
    # The list filters find it.
    found = api.get("/v1/generations", params={"prompt": "VINYL", "bpm_min": 80,
                                                "bpm_max": 100}, headers=AUTH).json()
    assert rec["id"] in [t["id"] for t in found["items"]]
    none = api.get("/v1/generations", params={"prompt": "vinyl", "bpm_min": 150},
                   headers=AUTH).json()
    assert rec["id"] not in [t["id"] for t in none["items"]]


def test_accepted_then_polled(api: httpx.Client) -> None:
    r = generate(api, wait=0, duration_s=2.0)
    assert r.status_code == 202
    url = r.headers["location"]
    deadline = time.monotonic() + 120
    while (rec := api.get(url, headers=AUTH).json())["status"] not in ("completed", "failed"):
        if time.monotonic() > deadline:
            pytest.fail(f"job stuck: {rec}")
        time.sleep(0.3)
    assert rec["status"] == "completed"


def test_idempotency_key(api: httpx.Client) -> None:
    body = {"prompt": "idempotent techno", "duration_s": 2.0, "engine": "synth"}
    headers = {**AUTH, "idempotency-key": "idem-1"}
    first = api.post("/v1/generations", params={"wait": 60}, json=body, headers=headers)
    again = api.post("/v1/generations", params={"wait": 60}, json=body, headers=headers)
    assert first.json()["id"] == again.json()["id"]
    listed = api.get("/v1/generations", params={"prompt": "idempotent techno"},
                     headers=AUTH).json()
    assert len(listed["items"]) == 1
    other = api.post("/v1/generations", json={**body, "duration_s": 3.0}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_delete(api: httpx.Client) -> None:
    rec = generate(api, duration_s=2.0).json()
    assert api.delete(f"/v1/generations/{rec['id']}", headers=AUTH).status_code == 204
    assert api.get(f"/v1/generations/{rec['id']}", headers=AUTH).status_code == 404
    assert httpx.get(rec["audio_url"]).status_code == 404


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"duration_s": 0}, 400, "invalid_duration_s"),
    ({"duration_s": -1}, 400, "invalid_duration_s"),
    ({"duration_s": 999}, 400, "duration_limit"),
    ({"prompt": ""}, 400, "invalid_prompt"),
    ({"prompt": "x" * 600}, 400, "prompt_limit"),
    ({"prompt": "bad\x00prompt"}, 400, "invalid_prompt"),
    ({"stems": ["kazoo"]}, 400, "invalid_stems"),
    ({"engine": None, "model": "facebook/unknown"}, 400, "model_not_served"),
    ({"surprise": 1}, 422, "malformed_body"),
    ({"duration_s": "8"}, 422, "malformed_body"),
    ({"loudness": {"preset": "loud"}}, 400, "invalid_loudness"),
    ({"callback_url": "http://169.254.169.254/latest"}, 400, "callback_url_not_allowed"),
])
def test_bad_input_gets_a_4xx_with_a_code(api: httpx.Client, body: dict[str, Any],
                                          status: int, code: str | None) -> None:
    before = api.get("/v1/stats", headers=AUTH).json()["total_tracks"]
    r = generate(api, wait=0, **body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["message"] and (code is None or err["code"] == code)
    assert api.get("/v1/stats", headers=AUTH).json()["total_tracks"] == before


def test_malformed_json_and_auth(api: httpx.Client) -> None:
    r = api.post("/v1/generations", content=b"{oops", headers={
        **AUTH, "content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (422, "malformed_json")
    for headers in ({}, {"x-api-key": "wrong"}):
        r = api.post("/v1/generations", json={"prompt": "x", "duration_s": 1},
                     headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
        assert api.get("/v1/generations", headers=headers).status_code == 401
    assert api.get("/v1/generations/not-an-id", headers=AUTH).status_code == 404


def test_healthz_needs_no_key(api: httpx.Client) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] and body["s3"]["ok"] and body["catalogue"]["ok"]
    assert "version" not in body and body["engine"] == {"ok": True}  # details need the key
    body = api.get("/healthz", headers=AUTH).json()
    assert body["engine"]["engine"] == "synth" and body["engine"]["device"] == "cpu"
    assert api.get("/docs").status_code == 200


def test_production_config_is_valid_and_fails_fast_without_gpus(ray_cluster: Any) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import build_app
    from musicfn.errors import NoGpuError

    config = yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "deployments.app:build_app"
    assert schema.http_options.host == "127.0.0.1"
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert deployments["MusicGen"]["ray_actor_options"]["num_gpus"] == 1
    assert deployments["MusicGen"]["graceful_shutdown_timeout_s"] > 120
    with pytest.raises(NoGpuError, match="--device cpu"):
        build_app(config["applications"][0]["args"])


def test_generate_client_command(api: httpx.Client, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    musicfn = str(Path(sys.executable).parent / "musicfn")
    env = {**os.environ, "MUSICFN_API_KEY": API_KEY}
    out = tmp_path / "clip.wav"
    done = subprocess.run([musicfn, "generate", "client command test", "--duration", "2",
                           "--engine", "synth", "--seed", "3", "-o", str(out),
                           "--url", str(api.base_url)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout and out.stat().st_size > 1000
    bad = subprocess.run([musicfn, "generate", "x", "--duration", "999", "--engine", "synth",
                          "--url", str(api.base_url)], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def _wav(seconds: float = 4.0, sr: int = 32000) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(0).standard_normal(t.size)  # unpitched clicks at 120 BPM
    clicks = (0.5 * noise * (np.mod(t, 0.5) < 0.02)).astype(np.float32)
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    buf = io.BytesIO()
    sf.write(buf, np.stack([clicks + chord, clicks + chord], axis=1), sr, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def test_analysis_upload_multipart_and_raw(api: httpx.Client) -> None:
    wav = _wav()
    r = api.post("/v1/analyses", files={"file": ("take 1.wav", wav, "audio/wav")},
                 headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filename"] == "take 1.wav"
    a = body["analysis"]
    assert a["duration_s"] == pytest.approx(4.0) and a["channels"] == 2
    assert abs(a["tempo"]["bpm"] - 120) / 120 < 0.04 and a["key"]["label"] == "C major"
    raw = api.post("/v1/analyses", content=wav, headers={**AUTH, "content-type": "audio/wav"})
    assert raw.status_code == 200 and raw.json()["analysis"]["frames"] == a["frames"]


def test_analysis_upload_store_makes_an_upload_track(api: httpx.Client) -> None:
    r = api.post("/v1/analyses", params={"store": "true", "preset": "broadcast"},
                 files={"file": ("loop.wav", _wav(), "audio/wav")}, headers=AUTH)
    assert r.status_code == 201, r.text
    track = r.json()["track"]
    assert track["status"] == "completed" and track["record"]["kind"] == "upload"
    assert track["record"]["audio_key"].startswith("processed/")
    assert track["record"]["summary"]["lufs"] == pytest.approx(-23.0, abs=0.5)
    assert httpx.get(track["audio_url"]).status_code == 200
    listed = api.get("/v1/generations", params={"kind": "upload"}, headers=AUTH).json()
    assert track["id"] in [t["id"] for t in listed["items"]]


def test_analysis_upload_limits_and_bad_audio(api: httpx.Client) -> None:
    big = b"\0" * (MAX_UPLOAD + 100_000)
    r = api.post("/v1/analyses", content=big, headers={**AUTH, "content-type": "audio/wav"})
    assert (r.status_code, r.json()["code"]) == (413, "upload_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(40):
            yield b"\0" * 100_000

    r = api.post("/v1/analyses", content=chunked(), headers={**AUTH,
                                                              "content-type": "audio/wav"})
    assert (r.status_code, r.json()["code"]) == (413, "upload_too_large")
    r = api.post("/v1/analyses", files={"file": ("x.wav", b"not audio at all" * 100)},
                 headers=AUTH)
    assert (r.status_code, r.json()["code"]) == (400, "unreadable_audio")
    r = api.post("/v1/analyses", files={"other": ("x.wav", _wav())}, headers=AUTH)
    assert (r.status_code, r.json()["code"]) == (400, "missing_file")
    r = api.post("/v1/analyses", params={"preset": "loud"}, content=_wav(),
                 headers={**AUTH, "content-type": "audio/wav"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_preset")  # a bad query value


def test_concurrent_posts_all_complete(api: httpx.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> dict[str, Any]:
        r = generate(api, wait=120, duration_s=2.0, seed=100 + i, prompt=f"burst {i}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert {r["status"] for r in results} == {"completed"}
    assert len({r["id"] for r in results}) == 6


def test_completion_callback_is_delivered(api: httpx.Client) -> None:
    import http.server
    import json
    import threading

    got: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/done"
        rec = generate(api, duration_s=2.0, callback_url=url).json()
        deadline = time.monotonic() + 120  # a deadline, not a speed: the box may be busy
        while not got and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got and got[0]["type"] == "generation.completed"
        assert got[0]["data"]["id"] == rec["id"] and got[0]["data"]["status"] == "completed"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.fault
def test_healthz_reports_s3_down(serve_url: str, tmp_path: Path) -> None:
    from ray import serve

    from deployments.app import build_app
    from tests.support import start_s3_server

    server = start_s3_server(tmp_path / "s3")
    try:
        settings = make_settings(server, tmp_path)
        serve.run(build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.25,
                             "settings": settings.model_dump()}),
                  name="ingress-s3down", route_prefix="/s3down")
        url = f"{serve_url}/s3down/healthz"
        assert httpx.get(url, timeout=30).status_code == 200
        server.stop()
        r = httpx.get(url, timeout=60)
        assert r.status_code == 503
        body = r.json()
        assert body["s3"] == {"ok": False, "error": "storage_unreachable"}
        assert body["catalogue"]["ok"] and body["engine"]["ok"]
        server.start()
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        serve.delete("ingress-s3down")
        server.stop()

