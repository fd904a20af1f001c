"""Scaling controls on a separate Ray cluster (``ray start --head`` with the dashboard, token
auth on): deploy with ``serve deploy``, then change MusicGen's replica count and a
``user_config`` limit through the dashboard's REST API, and watch both take effect without the
first replica restarting (same replica id, same pid).

The cluster runs in its own temp dir and process group and is stopped by signalling that group
only: ``ray stop`` would stop every Ray process on the machine, other test sessions' too.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from storage.embedded_s3 import EmbeddedS3
from tests.support import S3_ACCESS_KEY, S3_SECRET_KEY, free_port_block

pytestmark = [pytest.mark.ray]
REPO = Path(__file__).resolve().parents[1]
RAY = REPO / ".venv" / "bin" / "ray"
SERVE = REPO / ".venv" / "bin" / "serve"


@dataclass
class Cluster:
    """A ``ray start --head --block`` process group and how to reach its dashboard."""

    process: subprocess.Popen[bytes]
    temp_dir: Path
    dashboard: str
    token: str
    env: dict[str, str]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def applications(self) -> dict[str, Any]:
        r = httpx.get(f"{self.dashboard}/api/serve/applications/", headers=self.headers(),
                      timeout=30, trust_env=False)
        r.raise_for_status()
        apps: dict[str, Any] = r.json()["applications"]
        return apps

    def stop(self) -> None:
        """SIGTERM the cluster's process group, SIGKILL whatever is left after 20 s."""
        pgid = self.process.pid  # start_new_session: the group id is the leader's pid
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.5)
            if not _group_alive(pgid):
                break
        self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies still count for killpg(0); only live members matter.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                return True
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = free_port_block(9)
    workers = free_port_block(80)
    temp_dir = Path(tempfile.mkdtemp(prefix="rsc", dir="/tmp"))  # short: socket path limit
    token = secrets.token_hex(32)
    # The test's own token, not ~/.ray/auth_token; no RAY_ADDRESS of the session's cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost")
    cmd = [str(RAY), "start", "--head", "--block", "--num-cpus=2", "--disable-usage-stats",
           "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--port={base}", f"--object-manager-port={base + 1}",
           f"--node-manager-port={base + 2}", f"--ray-client-server-port={base + 3}",
           f"--dashboard-port={base + 4}", f"--dashboard-agent-listen-port={base + 5}",
           f"--dashboard-agent-grpc-port={base + 6}", f"--runtime-env-agent-port={base + 7}",
           f"--metrics-export-port={base + 8}", f"--min-worker-port={workers}",
           f"--max-worker-port={workers + 79}", f"--temp-dir={temp_dir}",
           "--object-store-memory=200000000"]
    log = (temp_dir / "ray-start.log").open("wb")
    process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    c = Cluster(process, temp_dir, f"http://127.0.0.1:{base + 4}", token, env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                c.applications()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("cluster did not start: " + (
                        temp_dir / "ray-start.log").read_text()[-2000:]) from None
                time.sleep(2)
        # Token auth is on: the same call without the token is refused.
        assert httpx.get(f"{c.dashboard}/api/serve/applications/", timeout=30,
                         trust_env=False).status_code == 401
        yield c
    finally:
        c.stop()


def _config(s3: EmbeddedS3, data_dir: Path, http_port: int) -> dict[str, Any]:
    """A serve_config.yaml-shaped config: the real app, synth engine on the CPU."""
    settings = {"embedded_s3_port": s3.port, "s3_access_key": S3_ACCESS_KEY,
                "s3_secret_key": S3_SECRET_KEY, "bucket": f"t-{secrets.token_hex(8)}",
                "data_dir": str(data_dir), "s3_max_attempts": 2, "poller": "off"}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{
            "name": "musicfn", "route_prefix": "/", "import_path": "deployments.app:build_app",
            "args": {"engine": "synth", "device": "cpu", "num_cpus": 0.25,
                     "batch_wait_timeout_s": 0.01, "settings": settings},
            "deployments": [{
                "name": "MusicGen", "num_replicas": 1,
                "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01,
                                "limits": {"max_duration_s": 30, "max_prompt_chars": 500,
                                           "max_stems": 7, "max_pending_jobs": 64}},
            }],
        }],
    }


def _wait_replicas(c: Cluster, count: int, timeout_s: float = 300) -> list[dict[str, Any]]:
    """MusicGen's RUNNING replicas once there are ``count`` and the app is RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = c.applications().get("musicfn", {})
        deployment = app.get("deployments", {}).get("MusicGen", {})
        running = [r for r in deployment.get("replicas", []) if r["state"] == "RUNNING"]
        if app.get("status") == "RUNNING" and len(running) == count:
            return running
        if app.get("status") == "DEPLOY_FAILED" or time.monotonic() > deadline:
            raise AssertionError(f"MusicGen not at {count} replicas: "
                                 f"{json.dumps(app, default=str)[:3000]}")
        time.sleep(2)


def _generate(api: httpx.Client, seconds: float) -> dict[str, Any]:
    r = api.post("/v1/generations", params={"wait": 120},
                 json={"prompt": "scaling test", "duration_s": seconds, "engine": "synth"})
    assert r.status_code == 200, r.text
    rec: dict[str, Any] = r.json()
    return rec


def _applied_configs(c: Cluster, pid: int) -> list[dict[str, Any]]:
    """The ``user_config applied`` JSON log lines of the worker process ``pid``."""
    logs = c.temp_dir / "session_latest" / "logs"
    lines = []
    for path in logs.glob(f"worker-*-{pid}.err"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and "user_config applied" in line:
                lines.append(json.loads(line))
    return lines


def test_replicas_and_limits_change_live(cluster: Cluster, s3_server: EmbeddedS3,
                                         tmp_path: Path) -> None:
    http_port = free_port_block()
    config = _config(s3_server, tmp_path, http_port)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    # 1. `serve deploy` (the token comes from RAY_AUTH_TOKEN in the environment).
    deployed = subprocess.run([str(SERVE), "deploy", str(path), "-a", cluster.dashboard],
                              env=cluster.env, cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    (first,) = _wait_replicas(cluster, 1)
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=150,
                      trust_env=False) as api:
        assert _generate(api, 5.0)["status"] == "completed"  # within the 30 s limit

        # 2. Two replicas and a 4 s duration limit, through the REST API.
        changed = copy.deepcopy(config)
        musicgen = changed["applications"][0]["deployments"][0]
        musicgen["num_replicas"] = 2
        musicgen["user_config"]["limits"]["max_duration_s"] = 4
        r = httpx.put(f"{cluster.dashboard}/api/serve/applications/", json=changed,
                      headers=cluster.headers(), timeout=60, trust_env=False)
        assert r.status_code == 200, r.text
        running = _wait_replicas(cluster, 2)
        same = [x for x in running if x["replica_id"] == first["replica_id"]]
        assert same and same[0]["pid"] == first["pid"], (first, running)

        # 3. The first replica applied the new limit in place (its own log says so) ...
        deadline = time.monotonic() + 60
        while not any(json.loads(e["message"].rsplit("limits ", 1)[1])["max_duration_s"] == 4
                      for e in _applied_configs(cluster, first["pid"])):
            assert time.monotonic() < deadline, _applied_configs(cluster, first["pid"])
            time.sleep(1)
        # ... and the ingress applies the same live limit (its one owner is this user_config):
        # within its few-second cache, requests over it are refused before any job exists.
        deadline = time.monotonic() + 60
        while True:
            r = api.post("/v1/generations", params={"wait": 120},
                         json={"prompt": "scaling test", "duration_s": 5.0, "engine": "synth"})
            if r.status_code >= 400:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(1)
        assert r.json()["code"] == "duration_limit", r.text
        assert _generate(api, 2.0)["status"] == "completed"
    # Still the same process: reconfigured, never restarted.
    final = {x["replica_id"]: x["pid"] for x in _wait_replicas(cluster, 2)}
    assert final[first["replica_id"]] == first["pid"]
