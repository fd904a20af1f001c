"""The MinIO webhook end to end: real HTTP through Serve, real SeaweedFS, the DuckDB owner.

Payloads are the real MinIO format (tests/fixtures/minio-webhook-put.json) re-aimed at
objects each test uploads.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from musicfn.settings import Settings
from storage.catalogue.actor import catalogue_actor
from storage.dlq import DeadLetterQueue
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from storage.sidecar import Sidecar
from tests.support import make_settings, musicfn_env
from tests.support.app import deployed_app
from tests.support.events import minio_fixture, notification, wait_for, wav_bytes

pytestmark = [pytest.mark.ray]
TOKEN = "hook-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def env(serve_url: str, s3_server: EmbeddedS3,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("events"),
                             webhook_token=TOKEN, poller="off", event_attempts=2)
    with deployed_app(settings, "events", "/v-events") as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        objects = ObjectStore(settings)
        objects.ensure_bucket()
        owner = catalogue_actor(settings.catalogue_file, detached=True,
                                namespace=settings.ray_namespace)
        yield {"api": client, "settings": settings, "objects": objects, "owner": owner}


def _tracks(env: dict[str, Any], key: str) -> list[Sidecar]:
    import ray

    tracks: list[Sidecar] = ray.get(env["owner"].tracks_by_source.remote(key))
    return tracks


def _upload(env: dict[str, Any], key: str, data: bytes | None = None,
            content_type: str = "audio/wav") -> str:
    etag: str = env["objects"].put(key, data if data is not None else wav_bytes(),
                                   content_type=content_type)
    return etag


def _post(env: dict[str, Any], body: Any, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response: httpx.Response = env["api"].post(
        "/v1/events/s3", content=data,
        headers={"content-type": "application/json", **(BEARER if headers is None else headers)})
    return response


def _key(name: str) -> str:
    return f"incoming/{uuid.uuid4().hex[:8]}/{name}"


def test_probe_and_put_event_makes_one_indexed_track(env: dict[str, Any]) -> None:
    assert env["api"].head("/v1/events/s3").status_code == 200
    key = _key("take.wav")
    etag = _upload(env, key)
    r = _post(env, notification(env["settings"].bucket, key, etag))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "rejected": []}
    [track] = wait_for(lambda: _tracks(env, key), what="processed track")
    assert track.kind == "upload" and track.status == "completed"
    assert track.source is not None and track.source.etag == etag
    pattern = rf"processed/\d{{4}}/\d{{2}}/\d{{2}}/{track.id}\.wav"
    assert re.fullmatch(pattern, track.audio_key or "")
    assert env["objects"].exists(track.audio_key)
    stored = Sidecar.from_json(env["objects"].get(track.audio_key.replace(".wav", ".json")))
    assert stored == track
    assert track.summary.lufs is not None and abs(track.summary.lufs + 16.0) < 1.0


def test_same_event_five_times_is_processed_once(env: dict[str, Any]) -> None:
    key = _key("loop.wav")
    etag = _upload(env, key)
    body = notification(env["settings"].bucket, key, etag)
    for _ in range(5):
        assert _post(env, body).status_code == 200
    wait_for(lambda: _tracks(env, key), what="processed track")
    # Later duplicates (after processing) are recognised too.
    for _ in range(2):
        assert _post(env, body).status_code == 200
    import time
    time.sleep(2)  # give any wrongly started second run the time to show up
    assert len(_tracks(env, key)) == 1
    listed = [o.key for o in env["objects"].list("processed/") if o.key.endswith(".wav")]
    assert listed.count(_tracks(env, key)[0].audio_key) == 1


def test_fixture_key_with_spaces_and_plus_decodes(env: dict[str, Any]) -> None:
    settings: Settings = env["settings"]
    raw = minio_fixture()
    key = raw["Records"][0]["s3"]["object"]["key"]  # incoming%2Ffield+recordings%2Ftake+1.wav
    assert key == "incoming%2Ffield+recordings%2Ftake+1.wav"
    _upload(env, "incoming/field recordings/take 1.wav")
    raw["Records"][0]["s3"]["bucket"]["name"] = settings.bucket
    assert _post(env, raw).status_code == 200
    wait_for(lambda: _tracks(env, "incoming/field recordings/take 1.wav"), what="track")
    plus = _key("a+b c.wav")
    _upload(env, plus)
    assert _post(env, notification(settings.bucket, plus)).status_code == 200
    [track] = wait_for(lambda: _tracks(env, plus), what="track for a key with +")
    assert track.source is not None and track.source.key == plus


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_bad_or_missing_token_is_401_and_nothing_runs(env: dict[str, Any],
                                                      headers: dict[str, str]) -> None:
    key = _key("secret.wav")
    _upload(env, key)
    r = _post(env, notification(env["settings"].bucket, key), headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    import ray
    assert ray.get(env["owner"].list_events.remote()) is not None
    assert _tracks(env, key) == []


def test_permanent_rejects_are_2xx_and_nothing_runs(env: dict[str, Any]) -> None:
    settings: Settings = env["settings"]
    text_key = _key("notes.txt")
    _upload(env, text_key, b"not audio at all", content_type="text/plain")
    cases = {
        "incoming/../processed/x.wav": "plain relative path",
        "incoming/a/../../etc/passwd": "plain relative path",
        "processed/2026/11/22/x.wav": "outside the incoming/ prefix",
        "somewhere/else.wav": "outside the incoming/ prefix",
    }
    for key, reason in cases.items():
        r = _post(env, notification(settings.bucket, key))
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 0 and reason in r.json()["rejected"][0]["reason"]
    r = _post(env, notification("another-bucket", _key("x.wav")))
    assert r.status_code == 200 and "not musicfn's bucket" in r.json()["rejected"][0]["reason"]
    r = _post(env, notification(settings.bucket, text_key, event="s3:ObjectAccessed:Get"))
    assert r.status_code == 200 and "not handled" in r.json()["rejected"][0]["reason"]
    # Non-audio is only known after the HEAD: accepted, then recorded as rejected.
    assert _post(env, notification(settings.bucket, text_key)).json()["accepted"] == 1
    import ray

    def rejected() -> bool:
        events = ray.get(env["owner"].list_events.remote("rejected"))
        return any(e.key == text_key for e in events)

    wait_for(rejected, what="rejected event record")
    assert _tracks(env, text_key) == []


def test_event_for_deleted_object_does_not_crash(env: dict[str, Any]) -> None:
    key = _key("gone.wav")
    _upload(env, key)
    env["objects"].delete(key)
    assert _post(env, notification(env["settings"].bucket, key)).status_code == 200
    assert _post(env, notification(env["settings"].bucket, key,
                                   event="s3:ObjectRemoved:Delete")).status_code == 200
    assert env["api"].get("/healthz").status_code == 200
    assert _tracks(env, key) == []


def test_musicfn_outputs_do_not_trigger_again(env: dict[str, Any]) -> None:
    key = _key("source.wav")
    _upload(env, key)
    _post(env, notification(env["settings"].bucket, key))
    [track] = wait_for(lambda: _tracks(env, key), what="track")
    before = len([o for o in env["objects"].list("processed/")])
    # Events for the outputs (as MinIO would send if notifications covered the bucket).
    for out in (track.audio_key, track.audio_key.replace(".wav", ".json")):
        r = _post(env, notification(env["settings"].bucket, out))
        assert r.json()["accepted"] == 0
    # An object under incoming/ carrying musicfn's writer marker is ignored after the HEAD.
    marked = _key("copy.wav")
    env["objects"].put(marked, wav_bytes(), content_type="audio/wav",
                       metadata={"musicfn-writer": "musicfn"})
    assert _post(env, notification(env["settings"].bucket, marked)).json()["accepted"] == 1
    import time
    time.sleep(3)
    assert _tracks(env, marked) == []
    assert len([o for o in env["objects"].list("processed/")]) == before


def test_malformed_payloads_are_422(env: dict[str, Any]) -> None:
    for body in (b"{not json", b'{"Records": "nope"}', b"[]", b'{"Records": [{}]}'):
        r = _post(env, body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] in ("malformed_json", "malformed_event")


def test_corrupt_audio_is_dead_lettered_and_replay_after_fix_succeeds(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    settings: Settings = env["settings"]
    key = _key("broken.wav")
    bad_etag = _upload(env, key, b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert _post(env, notification(settings.bucket, key, bad_etag)).status_code == 200

    def failed() -> Any:
        rec = ray.get(env["owner"].get_event.remote(settings.bucket, key, bad_etag))
        return rec if rec is not None and rec.status == "failed" else None

    record = wait_for(failed, what="failed event record")
    assert record.error.startswith("unreadable_audio")
    dlq = DeadLetterQueue(env["objects"], settings)
    [letter] = [x for x in dlq.list() if x.key == key]
    assert letter.error.code == "unreadable_audio" and letter.etag == bad_etag
    assert _tracks(env, key) == []
    # Fix the object, then replay the letter through the CLI (attached to this cluster).
    _upload(env, key)
    from musicfn_cli.main import main

    for name, value in musicfn_env(settings).items():
        monkeypatch.setenv(name, value)
    from musicfn.settings import get_settings
    get_settings.cache_clear()
    try:
        assert main(["events", "replay", "--id", letter.id]) == 0
    finally:
        get_settings.cache_clear()
    [track] = _tracks(env, key)
    assert track.status == "completed"
    assert [x for x in dlq.list() if x.key == key] == []


def test_removed_source_marks_its_track(env: dict[str, Any]) -> None:
    key = _key("to-remove.wav")
    _upload(env, key)
    _post(env, notification(env["settings"].bucket, key))
    [track] = wait_for(lambda: _tracks(env, key), what="track")
    env["objects"].delete(key)
    r = _post(env, notification(env["settings"].bucket, key, event="s3:ObjectRemoved:Delete"))
    assert r.status_code == 200

    def marked() -> Sidecar | None:
        [t] = _tracks(env, key)
        return t if t.source is not None and t.source.removed_at is not None else None

    updated = wait_for(marked, what="source-removed mark")
    stored = Sidecar.from_json(env["objects"].get(track.audio_key.replace(".wav", ".json")))
    assert stored.source is not None and stored.source.removed_at == updated.source.removed_at
    assert env["objects"].exists(track.audio_key)  # policy "keep"

