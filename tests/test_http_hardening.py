"""Regressions of the adversarial pass over the HTTP API, one test per finding, over real HTTP.

One deployment for the module (synth engine, DuckDB owner, runners) on its own SeaweedFS
server, so the S3-down tests can stop and restart it.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings, start_s3_server
from tests.support.app import deployed_app

pytestmark = [pytest.mark.ray]
API_KEY = "hardening-key"
TOKEN = "hardening-webhook-token"
AUTH = {"x-api-key": API_KEY}
MAX_UPLOAD = 500_000
MAX_DURATION_S = 2.0


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    server = start_s3_server(tmp_path_factory.mktemp("hardening-s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(serve_url: str, s3: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = make_settings(s3, tmp_path_factory.mktemp("hardening"), api_key=API_KEY,
                             webhook_token=TOKEN, max_upload_bytes=MAX_UPLOAD)
    with deployed_app(settings, "hardening", "/hardening", num_cpus=0.25,
                      batch_wait_timeout_s=0.01, max_duration_s=MAX_DURATION_S) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        yield client


def post(api: httpx.Client, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    payload = {"prompt": "hardening test", "duration_s": 0.5, "engine": "synth", **body}
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return api.post("/v1/generations", json=payload, headers=headers, **kwargs)


def total(api: httpx.Client) -> int:
    return int(api.get("/v1/stats", headers=AUTH).json()["total_tracks"])


def wav(seconds: float = 1.0) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, tone, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def error(r: httpx.Response, status: int, code: str | None = None) -> str:
    """The message of a ``{code, message}`` error with ``status`` (and ``code``)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"code", "message"} and body["message"], body
    assert code is None or body["code"] == code, body
    return str(body["message"])


@pytest.fixture
def s3_down(api: httpx.Client, s3: EmbeddedS3) -> Iterator[None]:
    """S3 stopped (and the replica's cached health knowing it) for one test."""
    s3.stop()
    try:
        assert api.get("/healthz").status_code == 503  # a fresh ping updates the cache
        yield
    finally:
        s3.start()
        deadline = time.monotonic() + 60
        while api.get("/healthz").status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail("S3 did not come back")
            time.sleep(0.5)


# -- 2a, 3: refuse at submission what can be known at submission ------------------------------

def test_posts_while_s3_is_down_get_503_with_retry_after(api: httpx.Client,
                                                         s3_down: None) -> None:
    for r in (post(api, {}),
              api.post("/v1/analyses", params={"store": "true"}, content=wav(),
                       headers={**AUTH, "content-type": "audio/wav"}),
              api.post("/v1/batches", json={"source": "incoming/x/"}, headers=AUTH)):
        error(r, 503, "storage_unreachable")
        assert int(r.headers["retry-after"]) > 0
    ok = api.post("/v1/analyses", content=wav(), headers={**AUTH, "content-type": "audio/wav"})
    assert ok.status_code == 200, ok.text  # analysing alone needs no storage


def test_store_failing_mid_request_is_503_not_500(api: httpx.Client, s3: EmbeddedS3) -> None:
    assert api.get("/healthz").status_code == 200  # cached: the store answers
    s3.stop()
    try:
        r = api.post("/v1/analyses", params={"store": "true"}, content=wav(),
                     headers={**AUTH, "content-type": "audio/wav"})
        assert "during put" in error(r, 503)  # the write itself failed
        assert r.headers["retry-after"]
    finally:
        s3.start()
        while api.get("/healthz").status_code != 200:
            time.sleep(0.5)


@pytest.mark.parametrize(("body", "code"), [
    ({"duration_s": 3e-18}, "invalid_duration_s"),
    ({"duration_s": MAX_DURATION_S + 0.5}, "duration_limit"),
    ({"output": {"format": "flac", "bit_depth": 32}}, "invalid_output"),
    ({"engine": "audiocraft"}, "engine_not_served"),
    ({"model": "facebook/musicgen-small"}, "model_not_served"),
    ({"prompt": "x" * 501}, "prompt_limit"),
])
def test_jobs_that_could_only_fail_are_refused(api: httpx.Client, body: dict[str, Any],
                                               code: str) -> None:
    before = total(api)
    field = code.removeprefix("invalid_").split("_limit")[0].split("_not_")[0]
    assert field in error(post(api, body), 400, code)
    assert total(api) == before


# -- 4: idempotency keys -------------------------------------------------------------------

@pytest.mark.parametrize("key", [b"", b"x" * 256, b"caf\xe9"])
def test_bad_idempotency_keys_are_refused(api: httpx.Client, key: bytes) -> None:
    r = post(api, {}, headers={"idempotency-key": key})
    assert "idempotency-key" in error(r, 400, "invalid_idempotency_key")


def test_replaying_the_key_of_a_deleted_job_is_409(api: httpx.Client) -> None:
    headers = {"idempotency-key": "hardening-deleted"}
    first = post(api, {}, headers=headers, params={"wait": 60})
    assert first.status_code == 200 and first.json()["status"] == "completed", first.text
    track = first.json()["id"]
    assert post(api, {}, headers=headers).json()["id"] == track  # a replay: the same job
    assert api.delete(f"/v1/generations/{track}", headers=AUTH).status_code == 204
    for _ in range(2):  # and so it stays
        message = error(post(api, {}, headers=headers), 409, "idempotency_key_spent")
        assert track in message
    assert api.get(f"/v1/generations/{track}", headers=AUTH).status_code == 404


# -- 5: list filters -----------------------------------------------------------------------

@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 501}, "limit"), ({"limit": "x"}, "limit"), ({"bpm_min": "nan"}, "bpm_min"),
    ({"lufs_max": "inf"}, "lufs_max"), ({"kind": ""}, "kind"), ({"engine": ""}, "engine"),
    ({"status": "done"}, "status"), ({"key": "H"}, "key"), ({"cursor": "garbage"}, "cursor"),
    ({"created_from": "2026-01-01"}, "created_from"),
    ({"created_to": "2026-01-01T00:00:00"}, "created_to"), ({"prompt": ""}, "prompt"),
])
def test_every_bad_filter_is_a_400_naming_it(api: httpx.Client, params: dict[str, Any],
                                             field: str) -> None:
    message = error(api.get("/v1/generations", params=params, headers=AUTH), 400,
                    f"invalid_{field}")
    assert message.startswith(f"{field}: ") and "pydantic" not in message


def test_an_empty_range_is_a_400_naming_both_ends(api: httpx.Client) -> None:
    message = error(api.get("/v1/generations", params={"bpm_min": 120, "bpm_max": 100},
                            headers=AUTH), 400, "invalid_filters")
    assert "bpm_min" in message and "bpm_max" in message


def test_good_filters_answer_200(api: httpx.Client) -> None:
    r = api.get("/v1/generations", headers=AUTH, params={
        "created_from": "2026-01-01T00:00:00Z", "created_to": "2126-01-01T00:00:00+02:00",
        "bpm_min": 0, "bpm_max": 1000, "kind": "generation", "limit": 500})
    assert r.status_code == 200 and "items" in r.json()


# -- 6: the OpenAPI document ---------------------------------------------------------------

def test_openapi_declares_every_status_body_and_scheme(api: httpx.Client) -> None:
    from deployments.http_errors import ERROR_DESCRIPTIONS

    doc = api.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header",
                                 "name": "X-API-Key"}
    assert schemes["ApiKeyBearer"]["scheme"] == schemes["WebhookToken"]["scheme"] == "bearer"
    paths = doc["paths"]
    for path, operations in paths.items():
        for method, op in operations.items():
            errors = {int(s) for s in op["responses"] if int(s) >= 400}
            assert 500 in errors and errors <= set(ERROR_DESCRIPTIONS), (method, path)
            if path.startswith("/v1/") and method != "head":
                assert 401 in errors and op["security"], (method, path)
    assert paths["/v1/events/s3"]["post"]["security"] == [{"WebhookToken": []}]
    analyses = paths["/v1/analyses"]["post"]
    assert {"multipart/form-data", "audio/wav", "audio/flac"} <= set(
        analyses["requestBody"]["content"])
    assert "413" in analyses["responses"]
    assert "requestBody" in paths["/v1/events/s3"]["post"]
    audio = paths["/v1/generations/{track_id}/audio"]["get"]["responses"]
    assert {"audio/wav", "audio/flac"} <= set(audio["200"]["content"]) and "307" in audio
    events = paths["/v1/generations/{track_id}/events"]["get"]["responses"]["200"]
    assert list(events["content"]) == ["text/event-stream"]
    retry = doc["components"]["responses"]["Error503"]["headers"]
    assert "Retry-After" in retry
    body = doc["components"]["schemas"]["GenerationBody"]["properties"]
    assert body["duration_s"]["maximum"] == MAX_DURATION_S  # the live limit
    assert body["engine"]["anyOf"][0]["enum"] == ["synth"]
    assert doc["servers"] == [{"url": "/hardening"}]


def test_options_and_405_list_every_method(api: httpx.Client) -> None:
    r = api.options("/v1/generations", headers=AUTH)
    assert r.status_code == 204 and r.headers["allow"] == "GET, POST, OPTIONS"
    r = api.put("/v1/generations/01m8pv3x36famtepsrak4jdbxg", headers=AUTH)
    error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET"


# -- 7: one status rule, strict types, text, keys, health, error shape -----------------------

@pytest.mark.parametrize(("body", "status", "code"), [
    ({"duration_s": True}, 422, "malformed_body"),
    ({"duration_s": "1"}, 422, "malformed_body"),
    ({"top_k": 1.5}, 422, "malformed_body"),
    ({"output": {"bit_depth": True}}, 422, "malformed_body"),
    ({"surprise": 1}, 422, "malformed_body"),
    ({"duration_s": 0}, 400, "invalid_duration_s"),
    ({"output": {"bit_depth": 20}}, 400, "invalid_output"),
    ({"prompt": "evil \u202etxt.exe"}, 400, "invalid_prompt"),
    ({"style": "a\u2066b"}, 400, "invalid_style"),
    ({"prompt": "   "}, 400, "invalid_prompt"),
    ({"seed": 2**53}, 400, "invalid_seed"),
])
def test_status_rule_for_bodies(api: httpx.Client, body: dict[str, Any], status: int,
                                code: str) -> None:
    error(post(api, body), status, code)


def test_only_body_size_is_413(api: httpx.Client) -> None:
    big = b"\0" * (MAX_UPLOAD + 1)
    error(api.post("/v1/analyses", content=big, headers={**AUTH, "content-type": "audio/wav"}),
          413, "upload_too_large")
    error(post(api, {"prompt": "y" * 600}), 400, "prompt_limit")
    error(api.post("/v1/generations", content=b"{oops", headers={
        **AUTH, "content-type": "application/json"}), 422, "malformed_json")


def raw_get(api: httpx.Client, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET sent byte for byte (httpx refuses blanks around header values and
    long URLs before sending)."""
    url = httpx.URL(str(api.base_url))
    lines = [f"GET {url.path.rstrip('/')}{path} HTTP/1.1", f"Host: {url.host}:{url.port}",
             "Connection: close", *(f"{k}:{v}" for k, v in (headers or {}).items())]
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize("headers", [{"X-API-Key": f"  {API_KEY}\t "},
                                     {"Authorization": f" Bearer   {API_KEY}  "},
                                     {"Authorization": f"bearer {API_KEY}"}])
def test_blanks_around_a_key_are_ignored_both_ways(api: httpx.Client,
                                                   headers: dict[str, str]) -> None:
    assert raw_get(api, "/v1/stats", headers) == 200
    assert raw_get(api, "/v1/stats", {k: v.replace(API_KEY, "nope") for k, v in
                                      headers.items()}) == 401


def test_healthz_says_ok_only_without_a_key(api: httpx.Client) -> None:
    public = api.get("/healthz").json()
    assert public == {"ok": True, "status": "ok", "s3": {"ok": True},
                      "catalogue": {"ok": True}, "engine": {"ok": True}}
    detailed = api.get("/healthz", headers=AUTH).json()
    assert detailed["s3"]["endpoint"] and detailed["engine"]["versions"] and detailed["version"]
    assert api.get("/healthz", headers={"x-api-key": "wrong"}).json() == public


def test_errors_are_json_in_one_shape(api: httpx.Client, tmp_path: Path) -> None:
    error(api.get("/v1/" + "a" * 8000, headers=AUTH), 404, "not_found")
    error(api.get("/nowhere"), 404, "not_found")
    error(api.get("/v1/generations/not-an-id", headers=AUTH), 404)
    error(api.get("/v1/stats"), 401, "unauthorized")
    error(api.post("/v1/events/s3", json={}), 401, "unauthorized")
    error(api.post("/v1/events/s3", json={"Records": [{"s3": {"object": {"size": False}}}]},
                   headers={"authorization": f"Bearer {TOKEN}"}), 422)
    # A path of 100 kB never reaches the app: the Serve proxy (uvicorn) refuses it itself, in
    # plain text (README: what the app cannot shape).
    assert 400 <= raw_get(api, f"/v1/{'a' * 100_000}", AUTH) < 500
