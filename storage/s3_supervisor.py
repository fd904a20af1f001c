"""Keeps the embedded SeaweedFS alive: restarts it when it dies, with bounded backoff.

``musicfn run`` starts one ``S3Supervisor`` thread beside the SeaweedFS process it owns. Every
``poll_s`` it checks the process (exited?) and the S3 port (answering?). A server that exited,
that stopped answering for ``hang_after_s`` (it is killed first), or, when an already running
server was reused, whose port nobody listens on any more, is started again on the same ports
and data directory, after a backoff: ``Backoff.initial_s`` doubling per consecutive failure up
to ``Backoff.max_s``, back to ``initial_s`` once a server has stayed up ``healthy_reset_s``. A
restart that fails counts as one more failure. Every attempt is logged and counted in
``ray_musicfn_embedded_s3_restarts_total{outcome}``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from musicfn import metrics
from musicfn.errors import EmbeddedS3Error
from storage.embedded_s3 import EmbeddedS3, probe_server

log = logging.getLogger(__name__)


class Backoff(BaseModel):
    """Delays before restarting a dead server: exponential, bounded, reset when healthy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    healthy_reset_s: float = Field(default=60.0, ge=0)

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th failure in a row."""
        return min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))


class Attempt(BaseModel):
    """One restart attempt: why, after how long a wait, and whether it came up."""

    model_config = ConfigDict(frozen=True)

    reason: str
    delay_s: float
    ok: bool
    error: str | None = None


class S3Supervisor:
    """A daemon thread that restarts ``server`` whenever it dies (see the module doc)."""

    def __init__(self, server: EmbeddedS3, backoff: Backoff | None = None, *,
                 poll_s: float = 1.0, hang_after_s: float = 30.0,
                 start_timeout_s: float = 60.0) -> None:
        self.server = server
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self.hang_after_s = hang_after_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0  # successful restarts
        self.failures = 0  # consecutive failures (deaths and failed restarts) since healthy
        self.attempts: collections.deque[Attempt] = collections.deque(maxlen=100)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._up_since = time.monotonic()
        self._silent_since: float | None = None

    def start(self) -> Self:
        """Start watching (the server must be up); returns at once."""
        if self._thread is None:
            self._up_since = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="embedded-s3-supervisor",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching (the server is left as it is: stop it with ``server.stop()``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            reason = self.down_reason()
            if reason is None:
                if self.failures and time.monotonic() - self._up_since >= \
                        self.backoff.healthy_reset_s:
                    log.info("embedded S3 healthy for %.0f s: backoff reset",
                             self.backoff.healthy_reset_s)
                    self.failures = 0
                continue
            self._recover(reason)

    def down_reason(self) -> str | None:
        """Why the server needs a restart now, or None while it is fine."""
        code = self.server.exit_code()
        if code is not None:
            return f"SeaweedFS (pid {self.server.pid}) exited with code {code}"
        if self.server.pid is None and probe_server(self.server.port) is None:
            return f"nothing listens on the S3 port {self.server.port} any more"
        if self.server.is_running(timeout=min(2.0, self.hang_after_s)):
            self._silent_since = None
            return None
        now = time.monotonic()
        if self._silent_since is None:
            self._silent_since = now
        if now - self._silent_since >= self.hang_after_s:
            return f"SeaweedFS not answering on port {self.server.port} for " \
                   f"{now - self._silent_since:.0f} s"
        return None

    def _recover(self, reason: str) -> None:
        """Restart until the server is up (or ``stop``), waiting the backoff before each try."""
        while not self._stop.is_set():
            self.failures += 1
            delay = self.backoff.delay(self.failures)
            log.warning("embedded S3 down: %s; restarting in %.1f s (failure %d in a row)",
                        reason, delay, self.failures)
            if self._stop.wait(delay):
                return
            try:
                self.server.restart(self.start_timeout_s)
            except EmbeddedS3Error as exc:
                if self._stop.is_set():
                    return  # stopped while starting: not a failure of the server
                self.attempts.append(Attempt(reason=reason, delay_s=delay, ok=False,
                                             error=str(exc)))
                metrics.record_embedded_s3_restart("failed")
                log.error("embedded S3 restart failed: %s", exc)
                reason = f"restart failed: {exc}"
                continue
            self.restarts += 1
            self.attempts.append(Attempt(reason=reason, delay_s=delay, ok=True))
            metrics.record_embedded_s3_restart("ok")
            log.warning("embedded S3 restarted (pid %s) after: %s", self.server.pid, reason)
            self._up_since = time.monotonic()
            self._silent_since = None
            return
