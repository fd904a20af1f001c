"""Start-up time of ``musicfn run``: start -> ready (``/healthz`` 200) and -> first track.

Runs ``musicfn run`` (the ``make run`` command) in a fresh data directory on free ports, polls
``/healthz`` every 0.1 s, waits for the example generation's ``generated ...`` line, then stops
the service with SIGINT (Ctrl-C), as a user would. Repeats ``--runs`` times and prints each
run's numbers, the phase lines ``musicfn run`` printed, and the medians::

    .venv/bin/python bench/startup.py --runs 3

It starts its own Ray cluster and SeaweedFS per run (never ``ray stop``: other clusters on the
machine are left alone) and kills only the process group it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicfn.ports import free_port_block

ROOT = Path(__file__).resolve().parents[1]


def one_run(timeout_s: float, extra: list[str], tree: Path | None = None,
            kill_s3: bool = False) -> dict[str, float | str]:
    """One start of ``musicfn run``: seconds to ready and to the first track, phase lines."""
    data = Path(tempfile.mkdtemp(prefix="musicfn-startup-"))
    http_port = free_port_block(1)
    env = {**os.environ, "MUSICFN_DATA_DIR": str(data),
           "MUSICFN_EMBEDDED_S3_PORT": str(free_port_block(5, gap=10000)),
           "MUSICFN_HTTP_PORT": str(http_port), "MUSICFN_RAY_NAMESPACE": f"bench-{data.name}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    if tree is not None:  # another copy of the code (an A/B comparison): first on the path
        env["PYTHONPATH"] = str(tree)
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/musicfn"), "run", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=data)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready = first = healed = ready_cpu = float("nan")
    try:
        with httpx.Client(timeout=2, trust_env=False) as client:
            while time.monotonic() - start < timeout_s and proc.poll() is None:
                if ready != ready:  # NaN: not ready yet
                    try:
                        if client.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200:
                            ready = time.monotonic() - start
                            ready_cpu = tree_cpu_s(proc.pid)
                    except httpx.HTTPError:
                        pass
                done = [t for t, line in lines if line.startswith("generated ")]
                if done:
                    first = done[0]
                if ready == ready and first == first:
                    break
                time.sleep(0.1)
            if kill_s3 and first == first:
                healed = kill_s3_and_wait(client, http_port, data / "s3", timeout_s)
    finally:
        with_sigint(proc)
        stop_s3(data / "s3")
        reader.join(timeout=5)
    phases = "\n".join(f"    {t:6.2f}s  {line}" for t, line in lines
                       if line.startswith(("start-up", "generated", "embedded S3", "deploy",
                                           "application", "Traceback", "musicfn:"))
                       or "s3_supervisor" in line)
    return {"ready_s": ready, "first_track_s": first, "healed_s": healed, "phases": phases,
            "ready_cpu_s": ready_cpu, "rc": str(proc.returncode)}


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system, with reaped children's) used so far by ``root`` and every
    process under it (Ray's GCS, raylet, workers, replicas, SeaweedFS): the start-up's cost,
    which other work on a shared machine changes much less than it changes wall-clock time."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def kill_s3_and_wait(client: httpx.Client, http_port: int, s3_dir: Path,
                     timeout_s: float) -> float:
    """kill -9 the embedded SeaweedFS; seconds until ``/healthz`` answers 200 again."""
    pid = int((s3_dir / "weed.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    seen_down = False
    while time.monotonic() - killed < timeout_s:
        try:
            status = client.get(f"http://127.0.0.1:{http_port}/healthz").status_code
        except httpx.HTTPError:
            status = 0
        seen_down = seen_down or status != 200
        if seen_down and status == 200:
            new_pid = int((s3_dir / "weed.pid").read_text())
            print(f"  S3 pid {pid} killed: /healthz {status} again after "
                  f"{time.monotonic() - killed:.2f} s (new pid {new_pid})")
            return time.monotonic() - killed
        time.sleep(0.1)
    return float("nan")


def stop_s3(s3_dir: Path) -> None:
    """Stop this run's embedded SeaweedFS (any ``weed`` serving ``s3_dir``): it runs in its own
    session, so a SIGKILL of the service's process group (a slow Ctrl-C) leaves it behind, and
    the S3 supervisor may have restarted it under a pid the pid file no longer names."""
    marker = f"-dir={s3_dir.resolve()}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if marker in cmdline.read_bytes().split(b"\0"):
                os.kill(int(cmdline.parent.name), signal.SIGTERM)


def with_sigint(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C the service and wait for it; SIGKILL its process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    """Run the benchmark and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="a copy of the code to run instead (PYTHONPATH); repeat to "
                        "alternate between copies, '.' for this one")
    parser.add_argument("--kill-s3", action="store_true",
                        help="after the first track, kill -9 the embedded S3 and time how "
                        "long /healthz takes to answer 200 again")
    parser.add_argument("args", nargs="*", help="extra arguments for `musicfn run`")
    opts = parser.parse_args()
    trees = [None if str(t) == "." else t.resolve() for t in opts.tree] or [None]
    results: dict[str, list[dict[str, float | str]]] = {}
    for i in range(opts.runs):
        for tree in trees:
            name = str(tree or ROOT)
            r = one_run(opts.timeout, opts.args, tree, opts.kill_s3)
            results.setdefault(name, []).append(r)
            print(f"run {i + 1} ({name}): ready {r['ready_s']:.2f} s "
                  f"({r['ready_cpu_s']:.1f} CPU s), first track "
                  f"{r['first_track_s']:.2f} s, S3 healed {r['healed_s']:.2f} s "
                  f"(exit {r['rc']}, load {os.getloadavg()[0]:.1f})"
                  f"\n{r['phases']}", flush=True)
    for name, runs in results.items():
        for key in ("ready_s", "ready_cpu_s", "first_track_s"):
            values = [float(r[key]) for r in runs]
            print(f"{name}: median {key} {statistics.median(values):.2f} s  (runs: "
                  f"{', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
