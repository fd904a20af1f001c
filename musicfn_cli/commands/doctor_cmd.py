"""``musicfn doctor``: print the security posture; exit 1 on a dangerous combination.

Besides the configuration checks (``musicfn_cli.doctor``) it lists every TCP socket the running
service listens on, read from ``/proc`` (``/proc/net/tcp{,6}`` and the processes' open
sockets): the service's processes are the tree of the one holding the catalogue file (the
owner actor under ``musicfn run``, with Ray's GCS, raylet, agents and workers of the same
Ray session) and the embedded S3 process of the settings; ``--pid`` adds a process tree.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML, a dependency of ray[serve]

from musicfn.errors import InvalidRequestError
from musicfn.settings import Settings
from musicfn_cli.doctor import Finding, Listener, load_settings, run_checks

_MARK = {"ok": "ok    ", "warn": "warn  ", "danger": "DANGER"}


def _load_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidRequestError(f"cannot read serve config {path}: {exc.strerror}",
                                  code="config_unreadable") from None
    except yaml.YAMLError as exc:
        raise InvalidRequestError(f"serve config {path} is not valid YAML: {exc}",
                                  code="config_invalid") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"serve config {path} is not a mapping",
                                  code="config_invalid")
    return data


def _proc_ip(hex_ip: str) -> str:
    """An address from /proc/net/tcp{,6}: 32-bit words in host byte order."""
    raw = bytes.fromhex(hex_ip)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return f"::ffff:{mapped}" if mapped else str(ip)


def _listening_inodes(proc: Path) -> dict[int, tuple[str, int]]:
    """Socket inode -> (host, port) of every TCP socket in the LISTEN state."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A":  # 0A: TCP_LISTEN
                hex_ip, hex_port = fields[1].split(":")
                found[int(fields[9])] = (_proc_ip(hex_ip), int(hex_port, 16))
    return found


def _processes(proc: Path) -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process visible in ``proc``."""
    found: dict[int, tuple[int, list[str]]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry.name)] = (ppid, [a for a in argv if a])
    return found


def _label(argv: list[str]) -> str:
    """A process's name: Ray's title (``ray::ServeReplica:…``), a Python script, a binary."""
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        return argv[0].split()[0]
    name = os.path.basename(argv[0].split()[0])
    if name.startswith("python"):
        script = next((a for a in argv[1:] if a.endswith(".py") or "musicfn" in a), None)
        return os.path.basename(script) if script else name
    return name


def _open_files(proc: Path, pid: int) -> Iterator[str]:
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return
    for fd in fds:
        try:
            yield os.readlink(fd)
        except OSError:
            continue


def service_pids(settings: Settings, extra: Iterable[int] = (), *,
                 proc: Path = Path("/proc")) -> dict[int, str]:
    """pid -> name of the running service's processes: the tree of the process holding the
    catalogue file (from its topmost Ray or ``musicfn run`` ancestor down, plus every process
    of the same Ray session), the embedded S3 of ``settings``, and the trees of ``extra``."""
    procs = _processes(proc)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    catalogue = str(settings.catalogue_file.resolve())
    s3_dir = f"-dir={settings.embedded_s3_data.resolve()}"
    roots = {pid for pid in extra if pid in procs}
    for pid, (_, argv) in procs.items():
        if argv and os.path.basename(argv[0]) == "weed" and s3_dir in argv:
            roots.add(pid)
        elif catalogue in set(_open_files(proc, pid)):
            roots.add(_service_root(pid, procs))
    found = _tree(roots, procs, children)
    sessions = {m for pid in found for m in re.findall(r"session_\d{4}-[\d_-]+",
                                                         " ".join(procs[pid][1]))}
    same_session = {pid for pid, (_, argv) in procs.items()
                    if any(name in " ".join(argv) for name in sessions)}
    return found | _tree(same_session - found.keys(), procs, children)


def _tree(roots: Iterable[int], procs: Mapping[int, tuple[int, list[str]]],
          children: Mapping[int, list[int]]) -> dict[int, str]:
    """pid -> name of ``roots`` and all their descendants."""
    found: dict[int, str] = {}
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found and pid in procs:
            found[pid] = _label(procs[pid][1])
            stack += children.get(pid, [])
    return found


def _service_root(pid: int, procs: Mapping[int, tuple[int, list[str]]]) -> int:
    """The topmost ancestor of ``pid`` in an unbroken line of service processes."""
    while procs[pid][0] in procs and _is_service(procs[procs[pid][0]][1]):
        pid = procs[pid][0]
    return pid


def _is_service(argv: list[str]) -> bool:
    """A Ray process or ``musicfn run`` (the ancestors of the catalogue owner to include)."""
    name = _label(argv)
    return name.startswith("ray::") or name in ("raylet", "gcs_server", "default_worker.py") \
        or (any(os.path.basename(a) in ("musicfn", "musicfn_cli.main") for a in argv)
            and "run" in argv)


def listening_sockets(pids: Mapping[int, str], *,
                      proc: Path = Path("/proc")) -> list[Listener]:
    """Every TCP socket that the processes ``pids`` (pid -> name) listen on."""
    inodes = _listening_inodes(proc)
    found: dict[int, Listener] = {}
    for pid in sorted(pids):
        for target in _open_files(proc, pid):
            inode = int(target[8:-1]) if target.startswith("socket:[") else -1
            if inode in inodes and inode not in found:
                host, port = inodes[inode]
                found[inode] = Listener(host, port, pid, pids[pid])
    return sorted(found.values(), key=lambda x: (x.process, x.pid, x.port))


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run the checks; 1 when any finding is dangerous (or, with --strict, a warning)."""
    config = _load_config(args.config)
    settings, findings = load_settings()
    if settings is not None:
        listeners = listening_sockets(service_pids(settings, args.pid or ()))
        findings = run_checks(settings, config,
                              dashboard_host=args.dashboard_host or settings.dashboard_host,
                              listeners=listeners)
    failing = {"danger", "warn"} if args.strict else {"danger"}
    problems = [f for f in findings if f.severity in failing]
    if args.json:
        print(json.dumps({"ok": not problems,
                          "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            print(_line(f))
        print(f"{len(problems)} problem(s)" if problems else "no problems found")
    return 1 if problems else 0


def _line(f: Finding) -> str:
    return f"{_MARK[f.severity]} {f.check}: {f.message}"


def register(sub: Any) -> None:
    """Add ``doctor`` to the ``musicfn`` parser."""
    p = sub.add_parser("doctor", help="check the security posture of the configuration")
    p.add_argument("--config", type=Path, help="a Serve config file, e.g. serve_config.yaml")
    p.add_argument("--dashboard-host", default=None,
                   help="where the Ray dashboard listens (ray start --dashboard-host; "
                        "default MUSICFN_DASHBOARD_HOST or 127.0.0.1)")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="also list the listening sockets of this process and its children "
                        "(repeatable; the running service's are found by its catalogue file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_doctor)
