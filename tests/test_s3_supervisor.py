"""The embedded S3 supervisor against a real SeaweedFS: kill -9 it, it comes back with its
data, the restart is counted at Ray's Prometheus endpoint; a server that keeps crashing is
retried with bounded exponential backoff, not in a tight loop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from musicfn.errors import EmbeddedS3Error
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from storage.s3_supervisor import Backoff, S3Supervisor
from tests.support import make_settings, start_s3_server
from tests.support.observability import Sample, total, wait_for_samples

RESTARTS = "ray_musicfn_embedded_s3_restarts_total"


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` (a generous bound, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedS3]:
    """A real SeaweedFS of this test's own (so it may be killed)."""
    s3 = start_s3_server(tmp_path / "s3")
    yield s3
    s3.stop()


def _kill9(s3: EmbeddedS3) -> int:
    pid = s3.pid
    assert pid is not None and int(s3.pid_file.read_text()) == pid
    os.kill(pid, signal.SIGKILL)
    return pid


def test_kill9_is_restarted_with_its_data_and_counted(
        ray_cluster: Any, server: EmbeddedS3, tmp_path: Path) -> None:
    store = ObjectStore(make_settings(server, tmp_path / "data"))
    store.ensure_bucket()
    store.put("before/kill.txt", b"still here", content_type="text/plain")
    supervisor = S3Supervisor(server, Backoff(initial_s=0.2, max_s=2.0), poll_s=0.2).start()
    try:
        old = _kill9(server)
        wait_until(lambda: supervisor.restarts == 1 and server.is_running(),
                   "the supervisor restarts SeaweedFS")
        assert server.pid not in (None, old)
        assert int(server.pid_file.read_text()) == server.pid
        assert store.get("before/kill.txt") == b"still here"
        [attempt] = supervisor.attempts
        assert attempt.ok and f"pid {old}" in attempt.reason and "exited" in attempt.reason
        assert attempt.delay_s == 0.2  # the first failure waits the initial backoff

        def missing(samples: list[Sample]) -> list[str]:
            return [] if total(samples, RESTARTS, outcome="ok") >= 1 else [RESTARTS]

        wait_for_samples(os.environ["MUSICFN_TEST_METRICS_URL"], missing)
    finally:
        supervisor.stop()


def test_crash_loop_backs_off_bounded_then_recovers(server: EmbeddedS3, tmp_path: Path) -> None:
    crashing = tmp_path / "crashing-weed"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    real_binary = server.binary
    backoff = Backoff(initial_s=0.05, max_s=0.4, healthy_reset_s=0.5)
    supervisor = S3Supervisor(server, backoff, poll_s=0.05).start()
    try:
        server.binary = crashing  # every restart now dies at once
        _kill9(server)
        wait_until(lambda: len(supervisor.attempts) >= 7, "seven failed restarts")
        server.binary = real_binary
        wait_until(lambda: supervisor.restarts == 1, "a restart with the real binary")
        attempts = list(supervisor.attempts)
        failed = [a for a in attempts if not a.ok]
        assert len(failed) >= 7 and all("exited with code 3" in (a.error or "") for a in failed)
        # Doubling from the initial delay, capped: never a tight loop, never unbounded.
        delays = [a.delay_s for a in attempts]
        assert delays[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
        assert max(delays) == backoff.max_s
        assert attempts[-1].ok and server.is_running()
        wait_until(lambda: supervisor.failures == 0, "backoff reset once healthy")
    finally:
        supervisor.stop()


def test_stop_during_backoff_does_not_restart(server: EmbeddedS3) -> None:
    supervisor = S3Supervisor(server, Backoff(initial_s=30.0), poll_s=0.05).start()
    _kill9(server)
    wait_until(lambda: supervisor.failures == 1, "the supervisor notices the death")
    supervisor.stop()
    server.stop()
    assert not supervisor.attempts and supervisor.restarts == 0
    assert not server.is_running()


def test_restart_refused_after_stop(server: EmbeddedS3) -> None:
    server.stop()
    with pytest.raises(EmbeddedS3Error, match="was stopped: not restarting"):
        server.restart()
    assert not server.is_running()


def test_backoff_is_exponential_and_bounded() -> None:
    b = Backoff()
    assert [b.delay(n) for n in (1, 2, 3, 7, 8, 50)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
