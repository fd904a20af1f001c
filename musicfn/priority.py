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


def ray_worker_niceness_env() -> None:
    """Have the Ray cluster this process starts run its workers at nice 0 (Ray's default is
    15), so the background thread's niceness is below the front door's; call before
    ``ray.init`` starts a cluster. An explicit ``RAY_worker_niceness`` is kept."""
    os.environ.setdefault(RAY_WORKER_NICENESS_ENV, "0")


def run_in_background(niceness: int | None = None) -> None:
    """Lower the calling thread's CPU priority to ``niceness`` (default: the setting
    ``background_nice``), or to 4 below the process's own priority when that is as low
    already (a Ray worker started at nice 15); never raises it, and does nothing where the
    OS refuses."""
    target = get_settings().background_nice if niceness is None else niceness
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no setpriority
        process = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's
        if target > 0 and process >= target:
            target = min(19, process + 4)
        if os.getpriority(os.PRIO_PROCESS, 0) < target:  # 0: the calling thread, on Linux
            os.setpriority(os.PRIO_PROCESS, 0, target)


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
