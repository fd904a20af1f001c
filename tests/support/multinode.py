"""Real Ray nodes on this machine for the multi-node test: a head and workers, each its own
``ray start --block`` process with its own temp dir and port block (below the ephemeral
range), stopped by PID, never with ``ray stop`` (which would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from musicfn.ports import free_port_block

RAY = str(Path(sys.executable).with_name("ray"))
#: Ports a node takes from its block, in order (the rest of the block: worker ports).
_NAMED_PORTS = ("port", "node-manager-port", "object-manager-port", "metrics-export-port",
                "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                "runtime-env-agent-port", "ray-client-server-port")
_WORKER_PORTS = 40
STARTED = "Ray runtime started"
BLOCK = len(_NAMED_PORTS) + _WORKER_PORTS


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``, and every process left in its session (orphans whose
    parent died were re-parented but keep the session ``start_new_session`` gave them)."""
    parents: dict[int, list[int]] = {}
    session: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
        if int(fields[3]) == pid and int(entry.name) != pid:
            session.append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(set(found) | set(session))


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class RayNode:
    """One Ray node: ``ray start --block`` in its own session (so its PID is its group)."""

    name: str
    resources: Mapping[str, float]
    env: Mapping[str, str]
    head_address: str | None = None  # None: this is the head
    num_cpus: int = 1
    dashboard: bool = False  # the head's dashboard (it writes Ray's Grafana configuration)
    ports: dict[str, int] = field(default_factory=dict)
    temp_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        """The GCS address (head only): the host's address, which Ray uses for every node
        of a multi-node cluster (it refuses to join nodes on 127.0.0.1)."""
        from ray.util import get_node_ip_address

        return f"{get_node_ip_address()}:{self.ports['port']}"  # type: ignore[no-untyped-call]

    def start(self) -> RayNode:
        """Start the node (returns at once; the test waits for it to join)."""
        base = free_port_block(BLOCK)
        self.ports = {name: base + i for i, name in enumerate(_NAMED_PORTS)}
        # A short root: Ray's Unix sockets live under it (108-byte path limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"mfn-{self.name}-", dir="/tmp"))
        self.log = self.temp_dir.with_suffix(".log")
        args = [RAY, "start", "--block", "--disable-usage-stats",
                f"--num-cpus={self.num_cpus}", "--num-gpus=0",
                f"--resources={json.dumps(dict(self.resources))}",
                f"--temp-dir={self.temp_dir}",
                f"--min-worker-port={base + len(_NAMED_PORTS)}",
                f"--max-worker-port={base + BLOCK - 1}"]
        named = dict(self.ports)
        if self.head_address is None:
            args += ["--head", f"--include-dashboard={str(self.dashboard).lower()}",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port_block()}"]
        else:
            args += [f"--address={self.head_address}"]
            for head_only in ("port", "ray-client-server-port"):
                named.pop(head_only)
        args += [f"--{name}={port}" for name, port in named.items()]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, env=dict(self.env), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def raylet_pid(self) -> int | None:
        """The PID of this node's raylet, if it runs."""
        if self.process is None:
            return None
        for pid in _children(self.process.pid):
            if "/raylet" in _cmdline(pid).split(" ", 1)[0] and _alive(pid):
                return pid
        return None

    def wait_raylet(self, timeout_s: float = 120.0) -> int:
        """Wait until the raylet runs; its PID."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = self.raylet_pid()
            if pid is not None:
                return pid
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"node {self.name} did not start: {self.tail()}")

    def wait_started(self, timeout_s: float = 180.0) -> bool:
        """Wait until ``ray start`` says the node runs (registered with the GCS): True; False
        when it gave up (Ray waits 30 s for a raylet to register, which an overloaded host
        can miss). Raises RuntimeError when neither happens in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log is not None and STARTED in self.log.read_text(errors="replace"):
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.5)
        raise RuntimeError(f"node {self.name} neither started nor failed: {self.tail()}")

    def kill_raylet(self) -> int:
        """kill -9 the raylet: the node is lost (its workers exit when their raylet goes)."""
        pid = self.wait_raylet(5)
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Stop every process of this node (its ``ray start`` session), then its temp dir."""
        if self.process is not None:
            pids = [self.process.pid, *_children(self.process.pid)]
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=20)
            for pid in pids:  # anything left of what this node started, by PID
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if self.process.poll() is None:
                self.process.wait(timeout=10)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self.log is not None:
            self.log.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the node's ``ray start`` output."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


__all__ = ["BLOCK", "RayNode"]
