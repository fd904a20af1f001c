"""CPU used by each process a bench started (Ray's, SeaweedFS), read from /proc, per unit of
work: where the cost of an event or a job goes. Benches import this as a sibling module (they
run as scripts from bench/), never anything from tests/.
"""

from __future__ import annotations

import os
from pathlib import Path


def _descendants() -> dict[int, str]:
    """pid → name of every process this one started (Ray's, SeaweedFS), from /proc: the
    other processes on a shared box are not ours to count."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        first = cmd[0].decode(errors="replace")
        names[int(entry.name)] = first if first.startswith("ray::") else \
            Path(first).name + (f" {Path(cmd[1].decode()).name}" if len(cmd) > 1 and
                                first.endswith("python") else "")
    ours, grew = {os.getpid()}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in ours} - ours
        grew = bool(new)
        ours |= new
    return {p: names[p] for p in ours if p in names}


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of each of our processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for pid, name in _descendants().items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_profile(before: dict[int, tuple[str, float]], events: int) -> dict[str, float]:
    """CPU milliseconds per event of each kind of process since ``before`` (Ray's task
    workers are named by what they run last, so they are summed as ``ray workers``)."""
    per: dict[str, float] = {}
    for pid, (name, cpu) in cpu_seconds().items():
        used = cpu - before.get(pid, (name, 0.0))[1]
        name = name.split(".")[0]  # an actor's title names the method it runs now
        kind = name.split(":")[-1] if name.startswith("ray::ServeReplica") else name
        if name.startswith("ray::") and not name.startswith(("ray::ServeReplica", "ray::Serve",
                                                             "ray::Proxy", "ray::Catalogue")):
            kind = "ray workers (tasks)"
        per[kind] = per.get(kind, 0.0) + used
    out = {k: round(1000 * v / events, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])
           if v > 0.001 * events}
    out["total"] = round(sum(1000 * v / events for v in per.values()), 1)
    return out
