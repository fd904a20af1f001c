"""The heavy work runs at background CPU priority, the front door at normal priority: on a
thread of its own, so no thread that serves anything else is ever lowered."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

from musicfn.priority import run_in_background
from storage.parallel import run_task


def test_only_the_calling_thread_is_lowered_and_never_raised() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        run_in_background(7)
        run_in_background(3)  # asks for more priority: refused silently
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, 0)

    main_before = os.getpriority(os.PRIO_PROCESS, 0)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["worker"] == max(7, main_before)
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_before  # this thread untouched


def test_a_process_started_at_a_high_niceness_still_gets_a_background_below_it() -> None:
    # Ray starts workers at nice 15 unless told otherwise (RAY_worker_niceness).
    import subprocess
    import sys

    code = ("import os, threading; from musicfn.priority import run_in_background\n"
            "seen = []\n"
            "def w():\n    run_in_background(10); run_in_background(10)\n"
            "    seen.append(os.getpriority(os.PRIO_PROCESS, 0))\n"
            "t = threading.Thread(target=w); t.start(); t.join()\n"
            "print(seen[0], os.getpriority(os.PRIO_PROCESS, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, preexec_fn=lambda: os.nice(15)).stdout.split()
    assert out == ["19", "15"]


def test_a_batch_process_lowers_every_thread_and_the_ones_it_starts_later() -> None:
    import subprocess
    import sys

    code = ("import os, threading\n"
            "from musicfn.priority import background_niceness, run_process_in_background\n"
            "stop = threading.Event(); seen = []\n"
            "early = threading.Thread(target=stop.wait); early.start()\n"
            "run_process_in_background(10); run_process_in_background(10)\n"
            "def late(): seen.append(os.getpriority(os.PRIO_PROCESS, 0))\n"
            "t = threading.Thread(target=late); t.start(); t.join()\n"
            "tids = [int(x) for x in os.listdir('/proc/self/task')]\n"
            "print(background_niceness(10), os.getpriority(os.PRIO_PROCESS, os.getpid()),\n"
            "      os.getpriority(os.PRIO_PROCESS, early.native_id), seen[0], len(tids))\n"
            "stop.set()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    target, main, early, late, threads = map(int, out[-5:])
    assert target >= 10 and main == early == late == target, out  # all three lowered
    assert threads >= 2


def test_background_work_runs_on_its_own_thread_at_the_niceness() -> None:
    from musicfn.priority import call_in_background
    from musicfn.settings import get_settings

    before = os.getpriority(os.PRIO_PROCESS, 0)
    there = call_in_background(os.getpriority, os.PRIO_PROCESS, 0)
    assert there >= get_settings().background_nice
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the caller keeps its priority


@pytest.mark.ray
def test_ray_tasks_run_at_the_background_niceness(ray_cluster: Any) -> None:
    from musicfn.settings import get_settings

    niceness = asyncio.run(run_task(os.getpriority, os.PRIO_PROCESS, 0, num_cpus=0.1))
    assert niceness >= get_settings().background_nice > 0
