"""Errors become ``{code, message}`` JSON with the right status; API keys and bearer tokens.

Served by a real uvicorn server over real HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from deployments.api.auth import check_api_key, check_bearer
from deployments.http_errors import install_error_handlers, status_for
from musicfn import errors as e
from tests.support import free_port_block

API_KEY = SecretStr("k-123")
TOKEN = SecretStr("t-456")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=10)


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    raisers = {
        "limit": e.LimitExceededError("too long", code="duration_too_long"),
        "too_large": e.PayloadTooLargeError("upload over 1 MB", code="upload_too_large"),
        "malformed": e.MalformedPayloadError("not an event", code="malformed_event"),
        "input": e.InvalidRequestError("bad"),
        "unsupported": e.UnsupportedError("no melody"),
        "missing": e.ObjectNotFoundError("no such object"),
        "conflict": e.InvalidTransitionError("done already"),
        "s3down": e.StorageUnreachableError("S3 endpoint http://x unreachable"),
        "overloaded": e.EngineOverloadedError("queue full", code="queue_full"),
        "denied": e.AccessDeniedError("denied"),
        "locked": e.CatalogueLockedError("locked"),
    }

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        if name == "bug":
            raise RuntimeError("secret internal detail")
        raise raisers[name]

    @app.post("/body")
    async def body(b: Body, request: Request) -> dict[str, str]:
        check_api_key(request, API_KEY)
        return {"prompt": b.prompt}

    @app.put("/body")
    async def replace_body(b: Body) -> dict[str, str]:
        return {"prompt": b.prompt}

    @app.get("/query")
    async def query(n: int) -> dict[str, int]:
        return {"n": n}

    @app.post("/events")
    async def events(request: Request) -> dict[str, bool]:
        check_bearer(request, TOKEN)
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port_block()
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize(("name", "status", "code"), [
    ("limit", 400, "duration_too_long"),
    ("too_large", 413, "upload_too_large"),
    ("input", 400, "invalid_request"),
    ("malformed", 422, "malformed_event"),
    ("unsupported", 400, "unsupported"),
    ("missing", 404, "object_not_found"),
    ("conflict", 409, "invalid_transition"),
    ("s3down", 503, "storage_unreachable"),
    ("overloaded", 503, "queue_full"),
    ("denied", 502, "storage_access_denied"),
    ("locked", 503, "catalogue_locked"),
    ("bug", 500, "internal_error"),
])
def test_errors_map_to_status_and_json(base_url: str, name: str, status: int,
                                       code: str) -> None:
    r = httpx.get(f"{base_url}/raise/{name}")
    assert r.status_code == status
    body = r.json()
    assert body["code"] == code and body["message"]
    assert "secret internal detail" not in r.text  # no internals leak in a 500
    if status == 503:
        assert r.headers["retry-after"] == "5"


def test_unknown_route_and_method_are_json(base_url: str) -> None:
    r = httpx.get(f"{base_url}/nope")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = httpx.delete(f"{base_url}/body")
    assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")


def test_validation_errors(base_url: str) -> None:
    """422: not the body's shape (JSON, types, fields); 400: a bad value, the field named."""
    headers = {"x-api-key": "k-123"}
    r = httpx.post(f"{base_url}/body", content=b"{not json", headers={
        **headers, "content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (422, "malformed_json")
    r = httpx.post(f"{base_url}/body", json={"prompt": "x" * 50}, headers=headers)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_prompt")
    assert r.json()["message"].startswith("prompt:")
    r = httpx.post(f"{base_url}/body", json={"prompt": "ok", "extra": 1}, headers=headers)
    assert r.status_code == 422 and "extra" in r.json()["message"]
    for wrong_type in ({"prompt": 5}, {"prompt": None}, {}):
        r = httpx.post(f"{base_url}/body", json=wrong_type, headers=headers)
        assert (r.status_code, r.json()["code"]) == (422, "malformed_body"), r.text
    r = httpx.get(f"{base_url}/query", params={"n": "abc"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_n")
    assert r.json()["message"].startswith("n:")


def test_options_and_405_name_every_method_of_the_path(base_url: str) -> None:
    r = httpx.options(f"{base_url}/body")
    assert r.status_code == 204 and r.headers["allow"] == "POST, PUT, OPTIONS"
    r = httpx.delete(f"{base_url}/body")
    assert r.status_code == 405 and r.headers["allow"] == "POST, PUT"


@pytest.mark.parametrize("headers", [
    {}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}, {"authorization": "k-123"},
])
def test_api_key_required(base_url: str, headers: dict[str, str]) -> None:
    r = httpx.post(f"{base_url}/body", json={"prompt": "ok"}, headers=headers)
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("headers", [{"x-api-key": "k-123"}, {"authorization": "Bearer k-123"},
                                     {"authorization": "bearer   k-123"}])
def test_api_key_accepted(base_url: str, headers: dict[str, str]) -> None:
    r = httpx.post(f"{base_url}/body", json={"prompt": "ok"}, headers=headers)
    assert r.status_code == 200 and r.json() == {"prompt": "ok"}


def test_webhook_bearer_token(base_url: str) -> None:
    assert httpx.post(f"{base_url}/events").status_code == 401
    assert httpx.post(f"{base_url}/events", headers={"authorization": "Bearer x"}
                      ).status_code == 401
    assert httpx.post(f"{base_url}/events", headers={"authorization": "Bearer t-456"}
                      ).status_code == 200


def test_ray_wrapped_errors_keep_their_code(ray_cluster: object) -> None:
    """A MusicfnError raised in a Ray task reaches the caller wrapped; the mapping sees the
    original instance (its specific code), not the class default."""
    import ray

    @ray.remote(max_retries=0)
    def fail() -> None:
        raise e.LimitExceededError("duration 99 s over 30 s", code="duration_too_long")

    with pytest.raises(e.LimitExceededError) as err:
        ray.get(fail.remote())
    original = e.original_error(err.value)
    assert isinstance(original, e.MusicfnError) and original.code == "duration_too_long"
    assert status_for(original) == 400  # a value over a limit; only body size is 413
