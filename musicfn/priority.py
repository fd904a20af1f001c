"""Background CPU priority for the heavy work of a shared node.

Accepting a request takes a few milliseconds of CPU; a clip's post-processing or a CPU
generation takes hundreds. When both share a node's cores, the scheduler's fair share makes
every acceptance wait behind the batch work; at a higher nice value the batch work yields to
it at once and still gets every cycle nobody else wants.

Linux keeps a nice value per thread, and an unprivileged process cannot lower it again. So
the heavy work runs on one dedicated thread per process (``call_in_background``), never on a
thread that serves anything else: a Ray worker that ran tasks may later host an actor, and
that actor's threads keep their normal priority.

Ray starts every worker at nice 15 (its ``worker_niceness``), which left no room below: the
background thread's nice 10 was a no-op and the batch work competed with the front door on
equal terms (a webhook burst was acknowledged at 52/s, 73/s with workers at nice 0). So
musicfn starts its Ray clusters with workers at nice 0 (``ray_worker_niceness_env``; for a
cluster started with ``ray start``, set ``RAY_worker_niceness=0`` in its environment), and on
a cluster that still runs workers at a higher value the background thread goes 4 above it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from musicfn.settings import get_settings

RAY_WORKER_NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet when it starts
P = ParamSpec("P")
T = TypeVar("T")
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
# This process's niceness as started (by Ray: its worker_niceness), before any lowering here.
_PROCESS_NICENESS = os.getpriority(os.PRIO_PROCESS, os.getpid()) if hasattr(os, "getpriority") \
    else 0


def ray_worker_niceness_env() -> None:
    """Have the Ray cluster this process starts run its workers at nice 0 (Ray's default is
    15), so the background thread's niceness is below the front door's; call before
    ``ray.init`` starts a cluster. An explicit ``RAY_worker_niceness`` is kept."""
    os.environ.setdefault(RAY_WORKER_NICENESS_ENV, "0")


def background_niceness(niceness: int | None = None) -> int:
    """The niceness of background work: ``niceness`` (default: the setting
    ``background_nice``), or 4 above the process's own when that is as high already (a Ray
    worker started at nice 15)."""
    target = get_settings().background_nice if niceness is None else niceness
    if target > 0 and target <= _PROCESS_NICENESS:
        return min(19, _PROCESS_NICENESS + 4)
    return target


def run_in_background(niceness: int | None = None) -> None:
    """Lower the calling thread's CPU priority to ``background_niceness(niceness)``; never
    raises it, and does nothing where the OS refuses."""
    _lower(0, background_niceness(niceness))  # 0: the calling thread, on Linux


def run_process_in_background(niceness: int | None = None) -> None:
    """``run_in_background`` for every thread of this process, and so for the threads it
    starts later (Linux: a thread inherits its creator's niceness). For a process that only
    does batch work, the job runner: its leases, heartbeats and orchestration then yield to
    the front door too. A no-op where ``/proc`` is not there."""
    target = background_niceness(niceness)
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            _lower(int(task), target)


def _lower(thread: int, target: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no setpriority
        if os.getpriority(os.PRIO_PROCESS, thread) < target:
            os.setpriority(os.PRIO_PROCESS, thread, target)


def background_executor() -> ThreadPoolExecutor:
    """This process's one background-priority thread (started on first use)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="musicfn-background",
                                           initializer=run_in_background)
        return _executor


def call_in_background(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the background-priority thread, waited for."""
    return background_executor().submit(fn, *args, **kwargs).result()
