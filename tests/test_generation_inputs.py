"""Melody and continuation over HTTP: a stored track or an uploaded file as reference audio.

Real Serve, SeaweedFS, DuckDB and the tiny random-weight MusicGen (no melody conditioner: its
chroma conditioner needs demucs weights, which cannot be downloaded here, so melody is tested
up to the engine boundary: the capability check). audiocraft's ``generate_continuation``
returns the prompt (re-encoded through the codec) followed by the continuation, ``duration_s``
in all: the test checks the result's first seconds against the prompt's codec round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.decode import decode_audio
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import make_settings
from tests.support.tiny_app import (
    FINAL,
    TinyApp,
    deploy_tiny_app,
    model_dir,
    teardown_tiny_app,
    wav_bytes,
)

pytestmark = [pytest.mark.ray]
SR = 32_000
MAX_UPLOAD = 2_000_000


@pytest.fixture(scope="module")
def app(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyApp]:
    import uuid

    settings = make_settings(s3_server, tmp_path_factory.mktemp("inputs"),
                             max_upload_bytes=MAX_UPLOAD, job_lease_s=3.0,
                             job_poll_interval_s=0.5,
                             ray_namespace=f"inputs-{uuid.uuid4().hex[:8]}")
    deployed = deploy_tiny_app("gen-inputs", settings, max_duration_s=10)
    yield deployed
    teardown_tiny_app(deployed)


def _tone(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(mono[None, :], channels, axis=0).astype(np.float32)


def _codec_round_trip(audio: np.ndarray) -> np.ndarray:
    """What the model makes of a prompt: encoded and decoded by its own codec."""
    import torch
    from audiocraft.models.musicgen import MusicGen

    model = MusicGen.get_pretrained(str(model_dir()), device="cpu")
    with torch.no_grad():
        tokens, _ = model.compression_model.encode(torch.from_numpy(audio)[None])
        out: np.ndarray = model.compression_model.decode(tokens, None)[0].numpy()
    return out


def _residual(a: np.ndarray, b: np.ndarray, seconds: float) -> float:
    """Energy of ``a`` that ``b`` (at the best gain) does not explain, over the first
    ``seconds``: ~0 when ``a`` starts with ``b`` (the stored clip is normalised and dithered).
    The random codec decodes any tokens to similar-looking noise (correlation ≈ 0.999 even
    for unrelated audio), so the residual, not a correlation, tells them apart."""
    n = int(seconds * SR)
    x, y = a[0, :n].astype(np.float64), b[0, :n].astype(np.float64)
    gain = float(x @ y) / float(y @ y)
    return float(((x - gain * y) ** 2).sum() / (x**2).sum())


def _final(app: TinyApp, r: Any) -> dict[str, Any]:
    """The record once the job has ended (the POST waited up to 120 s; poll beyond)."""
    import time

    assert r.status_code in (200, 202), r.text
    rec: dict[str, Any] = r.json()
    deadline = time.monotonic() + 600
    while rec["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        rec = app.client.get(f"/v1/generations/{rec['id']}").json()
    return rec


def _stats(app: TinyApp) -> int:
    return int(app.client.get("/v1/stats").json()["total_tracks"])


def _inputs_objects(app: TinyApp) -> list[str]:
    return [o.key for o in ObjectStore(app.settings).list("inputs/")]


def _job_payload(app: TinyApp, track_id: str) -> dict[str, Any]:
    view = app.owner().view.remote(track_id)
    import ray

    found = ray.get(view)
    return dict(found.job.payload)


def _audio_of(app: TinyApp, track_id: str) -> np.ndarray:
    r = app.client.get(f"/v1/generations/{track_id}/audio", params={"inline": 1})
    assert r.status_code == 200
    decoded = decode_audio(r.content)
    assert decoded.sample_rate == SR
    return decoded.audio


def test_continuation_of_a_stored_track(app: TinyApp) -> None:
    stored = app.client.post("/v1/analyses", params={"store": "true"},
                             files={"file": ("take.wav", wav_bytes(_tone(2.0), SR))})
    assert stored.status_code == 201, stored.text
    source = stored.json()["track"]["record"]
    r = app.client.post("/v1/generations", params={"wait": 120}, json={
        "prompt": "continue the take", "duration_s": 4.0, "seed": 5,
        "continuation": {"track_id": source["id"]}})
    rec = _final(app, r)
    assert rec["status"] == "completed", rec
    ref = rec["record"]["inputs"]["continuation"]
    assert ref["track_id"] == source["id"] and ref["key"] == source["audio_key"]
    assert ref["sha256"] == source["audio"]["sha256"]
    assert ref["duration_s"] == pytest.approx(2.0, abs=0.01)
    # The job row names the audio; it never carries samples.
    payload = _job_payload(app, rec["id"])
    assert payload["inputs"]["continuation"]["key"] == source["audio_key"]
    assert len(json.dumps(payload)) < 5000 and "samples" not in json.dumps(payload)
    # The result is the prompt (through the codec), then the continuation: 4 s in all.
    out = _audio_of(app, rec["id"])
    assert out.shape[1] == 4 * SR
    prompt = _audio_of(app, source["id"])
    echo = _codec_round_trip(prompt)
    plain = _final(app, app.client.post("/v1/generations", params={"wait": 120}, json={
        "prompt": "continue the take", "duration_s": 4.0, "seed": 5}))
    continued = _residual(out, echo, 1.8)
    unrelated = _residual(_audio_of(app, plain["id"]), echo, 1.8)
    print(f"residual: continued {continued:.2e}, unrelated {unrelated:.2e}")
    assert continued < 1e-5 and unrelated > 100 * continued, (continued, unrelated)


def test_continuation_of_an_uploaded_file(app: TinyApp) -> None:
    take = _tone(1.5)
    body = {"prompt": "continue my upload", "duration_s": 3.0, "seed": 9}
    r = app.client.post("/v1/generations", params={"wait": 120}, files={
        "request": (None, json.dumps(body), "application/json"),
        "continuation": ("take.wav", wav_bytes(take, SR), "audio/wav")})
    rec = _final(app, r)
    assert rec["status"] == "completed", rec
    ref = rec["record"]["inputs"]["continuation"]
    day = rec["record"]["created_at"][:10].replace("-", "/")
    assert ref["track_id"] is None and ref["key"].startswith(f"inputs/{day}/")
    stored = ObjectStore(app.settings).get(ref["key"])
    assert hashlib.sha256(stored).hexdigest() == ref["sha256"]
    assert ref["duration_s"] == pytest.approx(1.5) and ref["sample_rate"] == SR
    assert "samples" not in json.dumps(_job_payload(app, rec["id"]))
    out = _audio_of(app, rec["id"])
    assert out.shape[1] == 3 * SR
    assert _residual(out, _codec_round_trip(decode_audio(stored).audio), 1.3) < 1e-5
    # The same Idempotency-Key with the same file is the same job, with another file a 409.
    headers = {"idempotency-key": "upload-1"}
    files = {"request": (None, json.dumps(body), "application/json"),
             "continuation": ("take.wav", wav_bytes(take, SR), "audio/wav")}
    first = app.client.post("/v1/generations", files=files, headers=headers)
    again = app.client.post("/v1/generations", files=files, headers=headers)
    assert first.json()["id"] == again.json()["id"]
    other = app.client.post("/v1/generations", headers=headers, files={
        **files, "continuation": ("take.wav", wav_bytes(take * 0.5, SR), "audio/wav")})
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def _multipart(body: dict[str, Any], **parts: tuple[str, bytes]) -> dict[str, Any]:
    files: dict[str, Any] = {"request": (None, json.dumps(body), "application/json")}
    files.update({k: (name, data, "audio/wav") for k, (name, data) in parts.items()})
    return files


BODY = {"prompt": "reference checks", "duration_s": 4.0}
UNKNOWN_ID = "01m8q3c6tj8sc6a3zkf14emzqk"


@pytest.mark.parametrize(("json_body", "parts", "status", "code"), [
    ({**BODY, "continuation": {"track_id": UNKNOWN_ID}}, None, 404, "track_not_found"),
    ({**BODY, "continuation": {"track_id": "../x"}}, None, 400, "invalid_continuation"),
    ({**BODY, "continuation": {"id": UNKNOWN_ID}}, None, 422, "malformed_body"),
    ({**BODY, "melody": {"track_id": UNKNOWN_ID}}, None, 400, "melody_unsupported"),
    ({**BODY, "melody": {"track_id": UNKNOWN_ID}, "continuation": {"track_id": UNKNOWN_ID}},
     None, 400, "invalid_body"),
    (BODY, {"melody": ("m.wav", wav_bytes(_tone(1.0), SR))}, 400, "melody_unsupported"),
    (BODY, {"continuation": ("c.wav", wav_bytes(_tone(4.0), SR))}, 400,
     "invalid_continuation"),
    (BODY, {"continuation": ("c.wav", wav_bytes(_tone(0.5, 8000, 3), 8000))}, 400,
     "invalid_continuation"),
    (BODY, {"continuation": ("c.wav", wav_bytes(_tone(61.0, 8000), 8000))}, 400,
     "input_audio_limit"),
    (BODY, {"continuation": ("c.wav", b"not audio at all" * 10)}, 400, "unreadable_audio"),
    (BODY, {"continuation": ("c.wav", b"\0" * (MAX_UPLOAD + 1))}, 413, "upload_too_large"),
    (BODY, {"continuation": ("c.wav", b"")}, 400, "empty_upload"),
    ({**BODY, "continuation": {"track_id": UNKNOWN_ID}},
     {"continuation": ("c.wav", wav_bytes(_tone(1.0), SR))}, 400, "invalid_continuation"),
    (BODY, {"continuation": ("c.wav", wav_bytes(_tone(1.0), SR)),
            "melody": ("m.wav", wav_bytes(_tone(1.0), SR))}, 400, "too_many_files"),
    (BODY, {"drums": ("c.wav", wav_bytes(_tone(1.0), SR))}, 400, "invalid_multipart"),
])
def test_bad_references_are_refused_before_anything_is_queued(
        app: TinyApp, json_body: dict[str, Any], parts: dict[str, tuple[str, bytes]] | None,
        status: int, code: str) -> None:
    before, inputs = _stats(app), _inputs_objects(app)
    if parts is None:
        r = app.client.post("/v1/generations", json=json_body)
    else:
        r = app.client.post("/v1/generations", files=_multipart(json_body, **parts))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.json()["message"]
    assert _stats(app) == before and _inputs_objects(app) == inputs


def test_multipart_needs_the_request_part(app: TinyApp) -> None:
    r = app.client.post("/v1/generations", files={
        "continuation": ("c.wav", wav_bytes(_tone(1.0), SR), "audio/wav")})
    assert (r.status_code, r.json()["code"]) == (400, "missing_request")
    r = app.client.post("/v1/generations", files=_multipart({"prompt": 3, "duration_s": 2.0},
                                                            continuation=("c.wav", b"x")))
    assert (r.status_code, r.json()["code"]) == (422, "malformed_body")


def test_the_cli_sends_a_continuation_file(app: TinyApp, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    take = tmp_path / "take.wav"
    take.write_bytes(wav_bytes(_tone(1.0), SR))
    musicfn = str(Path(sys.executable).parent / "musicfn")
    out = tmp_path / "continued.wav"
    done = subprocess.run([musicfn, "generate", "cli continuation", "--duration", "2",
                           "--seed", "4", "--continuation", str(take), "-o", str(out),
                           "--url", str(app.client.base_url)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert decode_audio(out.read_bytes()).audio.shape[1] == 2 * SR
    bad = subprocess.run([musicfn, "generate", "x", "--duration", "2", "--melody", str(take),
                          "--url", str(app.client.base_url)], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300, check=False)
    assert bad.returncode == 2 and "melody" in bad.stderr


def test_the_document_offers_what_the_served_model_takes(app: TinyApp) -> None:
    import time

    # No melody conditioner in the tiny model: the live document offers continuation only
    # (JSON track reference and multipart part), once the capability cache has an answer.
    deadline = time.monotonic() + 120
    while True:
        doc = app.client.get("/openapi.json").json()
        body = doc["components"]["schemas"]["GenerationBody"]["properties"]
        if "melody" not in body or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "melody" not in body and "continuation" in body
    content = doc["paths"]["/v1/generations"]["post"]["requestBody"]["content"]
    parts = content["multipart/form-data"]["schema"]["properties"]
    assert set(parts) == {"request", "continuation"}
    assert content["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GenerationBody"}
    # A multipart body with the JSON part alone is a plain generation.
    r = app.client.post("/v1/generations", files={
        "request": (None, json.dumps({"prompt": "json part only", "duration_s": 1.0}),
                    "application/json")})
    assert r.status_code == 202, r.text
    assert _final(app, r)["status"] == "completed"


def test_the_web_page_continues_a_file_and_a_track(app: TinyApp, tmp_path: Path) -> None:
    """The Create form's "Continue from / Melody" box in headless Chromium: a file (sent as
    multipart) and a track id (sent in the JSON body)."""
    from tests.support.web_driver import (
        Browser,
        banner,
        ids,
        missing_browser,
        open_page,
        wait_completed,
    )

    why = missing_browser()
    if why:
        pytest.fail(f"the web page test needs a real browser: {why}")
    take = tmp_path / "take.wav"
    take.write_bytes(wav_bytes(_tone(1.0), SR))
    site = str(app.client.base_url).rstrip("/") + "/"
    b = Browser()
    try:
        open_page(b, site, key=None)
        b.type("#prompt", "continue from the page")
        b.type("#duration", "2")
        b.select("#ref-kind", "continuation")
        b.type("#ref-file", str(take), clear=False)
        b.click("#generate")
        b.wait("return document.querySelectorAll('#jobs li').length === 1", what="the job",
               diagnose=lambda: (banner(b), b.console()))
        (first,) = ids(b, "#jobs li")
        wait_completed(b, first)
        ref = app.client.get(f"/v1/generations/{first}").json()["record"]["inputs"]
        assert ref["continuation"]["key"].startswith("inputs/")
        # The same form with a track id instead of a file.
        open_page(b, site, key=None)
        b.type("#prompt", "continue a track from the page")
        b.type("#duration", "3")  # longer than the 2 s track it continues
        b.select("#ref-kind", "continuation")
        b.type("#ref-track", first)
        b.click("#generate")
        b.wait("return document.querySelectorAll('#jobs li').length === 1", what="the job",
               diagnose=lambda: (banner(b), b.console()))
        (second,) = ids(b, "#jobs li")
        wait_completed(b, second)
        ref = app.client.get(f"/v1/generations/{second}").json()["record"]["inputs"]
        assert ref["continuation"]["track_id"] == first
        errors = [e for e in b.console() if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        b.close()
