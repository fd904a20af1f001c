"""Start-up phases of ``musicfn run``: when each began and ended, printed one line each.

Phases may overlap (the embedded S3 starts while Ray does), so each line shows its span on
the clock that starts with the process (Python's own start-up and imports are the first
phase) as well as its duration; the total is the time since the process started.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def process_age_s() -> float:
    """Seconds since this process started (from /proc; 0.0 where that is unavailable)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Phases:
    """The start-up clock: ``t0`` is the process start on the ``time.monotonic`` scale."""

    t0: float = field(default_factory=lambda: time.monotonic() - process_age_s())
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, start: float, end: float) -> None:
        """Record phase ``name`` from ``start`` to ``end`` (``time.monotonic`` values)."""
        with self._lock:
            self.spans.append((name, start, end))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (recorded even when it raises)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.add(name, start, time.monotonic())

    def elapsed(self) -> float:
        """Seconds since the process started."""
        return time.monotonic() - self.t0

    def lines(self, total: str) -> list[str]:
        """One line per phase in start order, then ``total`` with the time since start."""
        with self._lock:
            spans = sorted(self.spans, key=lambda s: s[1])
        width = max((len(name) for name, _, _ in spans), default=0)
        out = [f"start-up phase  {name:<{width}}  {end - start:6.2f} s  "
               f"({start - self.t0:6.2f} -> {end - self.t0:6.2f})"
               for name, start, end in spans]
        out.append(f"start-up total  {total:<{width}}  {self.elapsed():6.2f} s")
        return out


class DeployWatch:
    """Records, from Serve's status polls while deploying, when Serve first answered and
    when each deployment first turned HEALTHY (``deploy_config``'s ``on_status``)."""

    def __init__(self, phases: Phases) -> None:
        self.phases = phases
        self.begin = time.monotonic()
        self.seen: set[str] = set()
        self.first: float | None = None

    def __call__(self, apps: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
            self.phases.add("serve start (controller, proxy) + submit", self.begin, now)
        for app in apps.values():
            for name, deployment in app.deployments.items():
                if deployment.status == "HEALTHY" and name not in self.seen:
                    self.seen.add(name)
                    self.phases.add(f"deployment {name} HEALTHY", self.first, now)
