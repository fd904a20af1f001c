"""Helpers of the fault tests: deploy a real musicfn app, find replicas and the owner, check
that nothing was lost."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from musicfn.settings import Settings
from musicfn_cli.commands.catalogue_access import OwnerCatalogue
from storage.catalogue.actor import OwnerClient, owner_name
from storage.catalogue.queries import TrackQuery
from storage.objects import ObjectStore
from storage.sidecar import Sidecar
from storage.verify import VerifyReport, verify

FINAL = ("completed", "failed", "canceled")


@dataclass
class App:
    """One deployed musicfn application and what a test needs to reach it."""

    name: str
    client: httpx.Client
    settings: Settings
    control: Path  # deployments.faults control directory
    objects: ObjectStore

    def post(self, wait: float = 0, **body: Any) -> httpx.Response:
        payload = {"prompt": "fault test groove", "duration_s": 2.0, "engine": "synth",
                   "bpm": 100, **body}
        return self.client.post("/v1/generations", params={"wait": wait}, json=payload)

    def accepted(self, **body: Any) -> str:
        r = self.post(**body)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def get(self, track_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/generations/{track_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_final(self, ids: Iterable[str], timeout_s: float = 240) -> dict[str, dict[str, Any]]:
        """Each job's record once it has ended (completed, failed or canceled)."""
        pending = set(ids)
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            for track_id in sorted(pending):
                rec = self.get(track_id)
                if rec["status"] in FINAL:
                    done[track_id] = rec
                    pending.discard(track_id)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"jobs not finished: {sorted(pending)}")
            time.sleep(0.3)
        return done

    def hold(self) -> None:
        (self.control / "hold").touch()

    def release(self) -> None:
        (self.control / "hold").unlink(missing_ok=True)

    def owner(self) -> Any:
        import ray

        return ray.get_actor(owner_name(self.settings.catalogue_file),
                             namespace=self.settings.ray_namespace)

    def engine(self) -> Any:
        from ray import serve

        return serve.get_deployment_handle("MusicGen", app_name=self.name)


def deploy(name: str, settings: Settings, tmp: Path, **engine_args: Any) -> App:
    """The ingress + synth MusicGen app with fault hooks on, served under ``/<name>``."""
    from ray import serve

    from deployments.app import build_app

    control = tmp / f"control-{name}"
    control.mkdir()
    args = {"engine": "synth", "device": "cpu", "num_cpus": 0, "batch_wait_timeout_s": 0.01,
            "fault_injection": {"control_dir": str(control)}, **engine_args}
    serve.run(build_app({**args, "settings": settings.model_dump()}), name=name,
              route_prefix=f"/{name}")
    base = os.environ["MUSICFN_TEST_SERVE_URL"]
    client = httpx.Client(base_url=f"{base}/{name}", timeout=120)
    objects = ObjectStore(settings)
    return App(name, client, settings, control, objects)


def teardown(app: App) -> None:
    """Delete the application and its detached catalogue owner."""
    import ray
    from ray import serve

    app.release()
    app.client.close()
    serve.delete(app.name)
    with contextlib.suppress(ValueError):
        ray.kill(app.owner())


def app_settings(make: Callable[..., Settings], *args: Any, **overrides: Any) -> Settings:
    """Per-test settings with their own Ray namespace (so each app has its own owner)."""
    return make(*args, ray_namespace=f"faults-{uuid.uuid4().hex[:8]}", **overrides)


def replicas(app_name: str) -> dict[str, Any]:
    """The live MusicGen replica actors of an application, by actor name."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#MusicGen#"
    found = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(prefix):
            try:
                found[entry["name"]] = ray.get_actor(entry["name"], namespace=entry["namespace"])
            except ValueError:
                continue
    return found


def running_replicas(app_name: str) -> int:
    from ray import serve

    status = serve.status().applications[app_name].deployments["MusicGen"]
    return sum(int(n) for state, n in status.replica_states.items() if state == "RUNNING")


def actor_pid(handle: Any) -> int:
    import ray

    return int(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60))


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def catalogue_rows(app: App) -> dict[str, Sidecar]:
    owner = OwnerClient(app.owner())
    page = owner.run(owner.catalogue.list_tracks(TrackQuery(limit=10_000)))
    assert page.next_cursor is None
    return {sc.id: sc for sc in page.items}


def assert_nothing_lost(app: App) -> VerifyReport:
    """Audio objects = sidecars = completed rows, and verify finds nothing."""
    prefix = f"{app.settings.generations_prefix}/"
    keys = [o.key for o in app.objects.list(prefix)]
    audio = {Path(k).stem for k in keys if not k.endswith(".json")}
    sidecars = {Path(k).stem for k in keys if k.endswith(".json")}
    rows = catalogue_rows(app)
    completed = {i for i, sc in rows.items() if sc.status == "completed"}
    assert audio == sidecars == completed, (audio ^ completed, sidecars ^ completed)
    report = verify(app.objects, OwnerCatalogue(OwnerClient(app.owner())), app.settings)
    assert report.ok, report.problems
    return report


def run_verify(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    import ray

    s = app.settings
    env = {**os.environ, "MUSICFN_EMBEDDED_S3_PORT": str(s.embedded_s3_port),
           "MUSICFN_EMBEDDED_S3_DIR": str(s.embedded_s3_data),
           "MUSICFN_S3_ACCESS_KEY": s.access_key, "MUSICFN_S3_SECRET_KEY": s.secret_key,
           "MUSICFN_BUCKET": s.bucket, "MUSICFN_DATA_DIR": str(s.data_dir)}
    address = ray.get_runtime_context().gcs_address
    return subprocess.run([str(Path(sys.executable).parent / "musicfn"), "verify", "--json",
                           "--grace", "0", "--ray-address", address, *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


class RefusingPort:
    """Listens on a stopped server's port and drops every connection: S3 is still down, and
    the test can see that clients tried it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts = 0
        self._sock = socket.create_server(("127.0.0.1", port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.attempts += 1
            conn.close()

    def __enter__(self) -> RefusingPort:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
