"""A real 2-node Ray cluster on this machine running serve_config.yaml in the production
layout (docs/multinode.md), and the loss of its GPU node.

* head: ``ray start --head`` with a ``head`` resource; the catalogue owner (DuckDB file) is
  pinned there by it;
* worker: ``ray start --address`` with a ``gpu_node`` resource; MusicGen (synth engine on the
  CPU) is placed there by it, as the KubeRay manifest places it on the GPU worker group.

Jobs run, the worker's raylet is killed (-9), more jobs are accepted while no engine node
exists, a replacement node joins, and then every accepted job has reached exactly one final
state and ``musicfn verify`` (the real CLI, through the owner actor) finds no stranded job
and no disagreement between the bucket and the catalogue.

Each node is its own ``ray start --block`` process group with its own temp dir and ports
from ``free_port_block``; the driver runs as a subprocess (tests.support.multinode_driver), since
this pytest process may hold the session cluster. Nodes are stopped by PID, never with
``ray stop``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from musicfn.ports import free_port_block
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import make_settings, musicfn_env
from tests.support.events import wait_for
from tests.support.multinode import RayNode
from tests.support.multinode_driver import GPU_RESOURCE, HEAD_RESOURCE

pytestmark = [pytest.mark.slow, pytest.mark.fault]
ROOT = Path(__file__).resolve().parent.parent
FINAL = {"completed", "failed", "canceled"}
LEASE_S = 5.0


class Cluster:
    """The nodes this test started, the environment they and the driver share."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.nodes: list[RayNode] = []
        self.head: RayNode | None = None

    def start_head(self) -> RayNode:
        """The head node (1 CPU, the ``head`` resource)."""
        self.head = self._add(RayNode("head", {HEAD_RESOURCE: 1}, self.env))
        return self.head

    def start_gpu_node(self, name: str) -> RayNode:
        """A worker node (1 CPU, the ``gpu_node`` resource) joined to the head."""
        if self.head is None:
            raise RuntimeError("start the head first")
        return self._add(RayNode(name, {GPU_RESOURCE: 1}, self.env,
                                 head_address=self.head.address))

    def _add(self, node: RayNode, tries: int = 3) -> RayNode:
        """Start ``node`` and wait until it has joined; on a host so loaded that Ray gives up
        on its own startup (30 s), try again with fresh ports."""
        for _ in range(tries):
            self.nodes.append(node)
            print(f"[{time.strftime('%H:%M:%S')}] start {node.name}", flush=True)
            if node.start().wait_started():
                return node
            print(f"node {node.name} gave up starting:\n{node.tail(5)}", flush=True)
            node.stop()
            self.nodes.remove(node)
            node = replace(node, ports={}, temp_dir=None, process=None, log=None)
        raise AssertionError(f"node {node.name} did not start in {tries} tries")

    def drive(self, *args: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """One driver phase in its own process; its JSON result."""
        print(f"[{time.strftime('%H:%M:%S')}] driver {args[0]}", flush=True)
        done = subprocess.run([sys.executable, "-m", "tests.support.multinode_driver", *args],
                              env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            logs = "\n".join(n.tail(15) for n in self.nodes)
            raise AssertionError(f"driver {args[0]} failed:\n{done.stderr[-4000:]}\n{logs}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def stop(self) -> None:
        """Every node, newest first, by PID."""
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture
def cluster(s3_server: EmbeddedS3, tmp_path: Path) -> Iterator[Cluster]:
    settings = make_settings(s3_server, tmp_path / "data", poller="off",
                             job_lease_s=LEASE_S, job_poll_interval_s=0.5)
    ObjectStore(settings).ensure_bucket()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MUSICFN_", "RAY_ADDRESS"))}
    env.update(musicfn_env(settings))
    env.update({
        "MUSICFN_POLLER": "off", "MUSICFN_JOB_LEASE_S": str(LEASE_S),
        "MUSICFN_JOB_POLL_INTERVAL_S": "0.5",
        "RAY_AUTH_MODE": "token",  # the nodes and the driver use ~/.ray/auth_token
        "RAY_USAGE_STATS_ENABLED": "0",
        # The GCS declares a silent node dead after ~3 s instead of ~15 s.
        "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
    })
    (tmp_path / "data").mkdir()
    nodes = Cluster(env)
    try:
        yield nodes
    finally:
        nodes.stop()


def _submit(api: httpx.Client, n: int) -> str:
    r = api.post("/v1/generations", json={"prompt": f"node loss take {n}", "duration_s": 4.0,
                                          "engine": "synth", "bpm": 90 + n, "seed": n})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _statuses(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for job_id in ids:
        r = api.get(f"/v1/generations/{job_id}")
        assert r.status_code == 200, r.text
        out[job_id] = r.json()
    return out


def test_gpu_node_lost_jobs_end_once_and_nothing_is_stranded(cluster: Cluster) -> None:
    head = cluster.start_head()
    gpu = cluster.start_gpu_node("gpu1")
    cluster.drive("wait", head.address, "--resource", GPU_RESOURCE)
    placed = cluster.drive("deploy", head.address, "--config", str(ROOT / "serve_config.yaml"),
                           "--http-port", str(free_port_block()))
    # The layout: the catalogue owner on the head, MusicGen on the GPU node.
    print(json.dumps(placed))
    assert placed["owner_node"] in placed["head_nodes"], placed
    assert placed["replicas"]["MusicGen"], placed
    assert set(placed["replicas"]["MusicGen"]) <= set(placed["gpu_nodes"]), placed

    with httpx.Client(base_url=placed["url"], timeout=60, trust_env=False) as api:
        before = [_submit(api, n) for n in range(6)]
        wait_for(lambda: any(s["status"] != "pending" for s in _statuses(api, before).values()),
                 timeout=120, every=0.5, what="a job to start")
        print("before the loss:", {k: (v["status"], v["progress"])
                                   for k, v in _statuses(api, before).items()})
        gpu.kill_raylet()  # the GPU node is lost, mid-work
        cluster.drive("wait", head.address, "--resource", GPU_RESOURCE, "--absent")
        # Accepting work needs no engine: the jobs wait in the catalogue.
        during = [_submit(api, n) for n in range(6, 9)]
        assert all(s["status"] not in FINAL for s in _statuses(api, during).values())

        cluster.start_gpu_node("gpu2")  # a replacement joins (as a K8s node pool would)
        ids = before + during
        seen: dict[str, dict[str, Any]] = {}

        def ended() -> dict[str, dict[str, Any]] | None:
            seen.update(_statuses(api, ids))
            return seen if all(v["status"] in FINAL for v in seen.values()) else None

        try:
            final = wait_for(ended, timeout=150, every=0.5, what="every job to end")
        except AssertionError:
            raise AssertionError("jobs not ended: " + json.dumps(
                {i: (v["status"], v["progress"], v.get("attempts")) for i, v in seen.items()}
            )) from None
        summary = {i: (v["status"], v.get("attempts")) for i, v in final.items()}
        print("job outcomes after the node loss:", json.dumps(summary))
        # Jobs accepted while no engine node existed ran once it was back.
        assert all(final[i]["status"] == "completed" for i in during), summary
        # Every job ended once: its final state stays, and it is one row of the listing.
        time.sleep(2 * LEASE_S)
        assert {i: v["status"] for i, v in _statuses(api, ids).items()} == {
            i: v["status"] for i, v in final.items()}
        listed = api.get("/v1/generations", params={"limit": 500}).json()["items"]
        assert sorted(r["id"] for r in listed) == sorted(ids)
        for job_id, rec in final.items():
            if rec["status"] == "completed":
                assert api.get(f"/v1/generations/{job_id}/audio",
                               params={"inline": 1}).status_code == 200
            else:  # failed cleanly: a reason, no audio
                assert rec["record"]["error"], rec

    after = cluster.drive("placement", head.address)
    assert after["owner_node"] in after["head_nodes"], after
    assert set(after["replicas"]["MusicGen"]) <= set(after["gpu_nodes"]), after
    verify = subprocess.run(
        [str(Path(sys.executable).with_name("musicfn")), "verify", "--json", "--grace", "0",
         "--catalogue", "owner", "--ray-address", head.address],
        env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    report = json.loads(verify.stdout)
    assert "stranded_job" not in report["counts"], report
    assert verify.returncode == 0 and report["ok"], report
    assert report["rows"] == len(ids)
