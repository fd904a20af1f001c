"""Batch processing: ``POST /v1/batches`` over real HTTP and ``musicfn process`` (a folder and
an s3:// prefix) as a real subprocess attached to the test cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from musicfn.settings import Settings
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import cli_env, make_settings
from tests.support.app import deployed_app
from tests.support.events import wait_for, wav_bytes

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def batch_app(serve_url: str, s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[httpx.Client, Settings, ObjectStore]]:
    settings = make_settings(s3_server, tmp_path_factory.mktemp("batches"), poller="off",
                             ray_namespace="batch-app")
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    with deployed_app(settings, "batches", "/v-batches") as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings, objects


def test_batch_over_http_reports_progress_and_summary(
        batch_app: tuple[httpx.Client, Settings, ObjectStore]) -> None:
    api, settings, objects = batch_app
    for i in range(4):
        objects.put(f"incoming/set-a/{i}.wav", wav_bytes(seconds=1.0, seed=i),
                    content_type="audio/wav")
    objects.put("incoming/set-a/bad.wav", b"RIFFnope", content_type="audio/wav")
    objects.put("incoming/set-a/cover.jpg", b"\xff\xd8jpeg", content_type="image/jpeg")
    r = api.post("/v1/batches", json={"source": f"s3://{settings.bucket}/incoming/set-a/"})
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/batches/{batch_id}"

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/v1/batches/{batch_id}").json()
        return body if body["status"] != "running" else None

    final = wait_for(finished, what="batch completion")
    assert final["status"] == "completed"
    assert (final["total"], final["processed"], final["skipped"], final["failed"]) == \
        (6, 4, 1, 1)
    # Running it again processes nothing twice (the failed object waits for a replay).
    again = api.post("/v1/batches", json={"source": "incoming/set-a"}).json()["id"]
    second = wait_for(lambda: (b := api.get(f"/v1/batches/{again}").json())["status"]
                      != "running" and b, what="second batch")
    assert second["processed"] == 0 and second["skipped"] == 6 and second["failed"] == 0
    uploads = api.get("/v1/generations", params={"kind": "upload", "limit": 50}).json()
    assert len([t for t in uploads["items"] if t["status"] == "completed"]) >= 4


@pytest.mark.parametrize("source", ["s3://other-bucket/incoming/x", "processed/2026/",
                                    "incoming/../processed", "dlq/"])
def test_batch_sources_outside_incoming_are_400(
        batch_app: tuple[httpx.Client, Settings, ObjectStore], source: str) -> None:
    api, _, _ = batch_app
    r = api.post("/v1/batches", json={"source": source})
    assert r.status_code == 400 and r.json()["code"] == "invalid_batch_source"


def test_unknown_batch_is_404(batch_app: tuple[httpx.Client, Settings, ObjectStore]) -> None:
    api, _, _ = batch_app
    assert api.get("/v1/batches/nope").status_code == 404
    assert api.get("/v1/batches/01knx5zq2m4c8v6b3n7d9f1g2h").status_code == 404


def test_cli_process_folder_and_prefix(batch_app: tuple[httpx.Client, Settings, ObjectStore],
                                       ray_cluster: Any, tmp_path: Path) -> None:
    _, settings, objects = batch_app
    folder = tmp_path / "takes"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav"]):
        (folder / name).write_bytes(wav_bytes(seconds=1.0, seed=10 + i))
    (folder / "notes.txt").write_text("ignored")
    env = cli_env(settings, ray_cluster)
    run = subprocess.run([sys.executable, "-m", "musicfn_cli.main", "process", str(folder),
                          "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["total"], summary["processed"], summary["failed"]) == (3, 3, 0)
    uploaded = [o.key for o in objects.list("incoming/batches/")]
    assert len(uploaded) == 3 and any(k.endswith("/sub/c.wav") for k in uploaded)
    # The same objects again through an s3:// source: all skipped, exit 0.
    prefix = uploaded[0].rsplit("/", 1)[0].split("/sub")[0]
    run = subprocess.run([sys.executable, "-m", "musicfn_cli.main", "process",
                          f"s3://{settings.bucket}/{prefix}/", "--json"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["skipped"] == 3
    # Bad input: one line, exit 2.
    bad = subprocess.run([sys.executable, "-m", "musicfn_cli.main", "process", "s3://x/incoming/"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "not musicfn's bucket" in bad.stderr
    ls = subprocess.run([sys.executable, "-m", "musicfn_cli.main", "events", "ls", "--json"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ls.returncode == 0 and isinstance(json.loads(ls.stdout), list)
