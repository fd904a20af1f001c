"""Background CPU priority for the heavy work of a shared node.

Accepting a request takes a few milliseconds of CPU; a clip's post-processing or a CPU
generation takes hundreds. When both share a node's cores, the scheduler's fair share makes
every acceptance wait behind the batch work; at a higher nice value the batch work yields to
it at once and still gets every cycle nobody else wants.

Linux keeps a nice value per thread, and an unprivileged process cannot lower it again. So
the heavy work runs on one dedicated thread per process (``call_in_background``), never on a
thread that serves anything else: a Ray worker that ran tasks may later host an actor, and
that actor's threads keep their normal priority.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from musicfn.settings import get_settings

P = ParamSpec("P")
T = TypeVar("T")
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def run_in_background(niceness: int | None = None) -> None:
    """Lower the calling thread's CPU priority to ``niceness`` (default: the setting
    ``background_nice``); never raises it, and does nothing where the OS refuses."""
    target = get_settings().background_nice if niceness is None else niceness
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no setpriority
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
