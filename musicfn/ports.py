"""Free local port blocks for tests and benchmarks (below the kernel's ephemeral range).

One owner for tests and benches alike (benches must not import ``tests``: a site-packages
``tests`` package shadows the repo's when a bench script's folder is ``sys.path[0]``). A port
from the ephemeral range can be taken by any
outgoing connection (a Ray worker's, say) between being picked and being bound, so blocks are
drawn from 10000 up to the range's floor. SeaweedFS needs five ports and the same block
+ 10000 for gRPC: ``free_port_block(5, gap=10000)``.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FLOOR_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (32768 when unknown)."""
    try:
        return int(_FLOOR_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int) -> bool:
    """True when nothing is bound to 127.0.0.1:``port``."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int = 1, *, gap: int = 0) -> int:
    """A base port such that ``base..base+size-1`` (and with ``gap`` the same block + gap)
    are free, all below the ephemeral range. Raises RuntimeError when none is found."""
    top = ephemeral_floor() - size - gap - 1
    if top <= _LOWEST:
        raise RuntimeError(f"no room for {size} ports (+{gap}) below the ephemeral range")
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(_LOWEST, top)
        ports = [base + i for i in range(size)]
        if gap:
            ports += [p + gap for p in ports]
        if all(port_free(p) for p in ports):
            return base
    raise RuntimeError("no free port block found")

