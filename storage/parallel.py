"""Run independent pieces of work as Ray tasks, or on local threads without Ray.

Bulk storage work (reindex) is a set of independent function calls, and one object event's
work is one call (``run_task``). When this process is connected to Ray (the service's
replicas and catalogue owner, any driver that called ``ray.init``) they run as Ray tasks,
spread over every CPU and node; otherwise on threads in this process. The CLI runs reindex
with the service stopped and no Ray: it does not start one (a local Ray takes 4-8 s to come up
on a small box, longer than threads need for ~10k sidecars). Layers above storage call these
and never import ``ray`` for it. Tasks are retried only when their worker dies; a function's
own error reaches the caller as itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal, Protocol

from musicfn.errors import ConfigurationError, original_error
from musicfn.priority import call_in_background

Parallelism = Literal["auto", "ray", "threads"]


class TaskRunner(Protocol):
    """Submit calls; wait for some to finish."""

    name: str

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)``; returns a handle."""
        ...

    def wait(self, handles: list[Any]) -> tuple[list[Any], list[Any]]:
        """(results of the finished calls, handles still running); at least one finishes.
        A call's exception is raised here (as the original error for Ray tasks)."""
        ...

    def close(self, handles: list[Any]) -> None:
        """Abandon ``handles`` (cancelled where possible) and release the runner."""
        ...


def ray_connected() -> bool:
    """True when this process is connected to Ray (without importing it if it is not)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def task_runner(parallel: Parallelism, threads: int) -> TaskRunner:
    """Ray tasks for ``"ray"`` (and ``"auto"`` when connected to Ray), else threads."""
    if parallel == "ray" or (parallel == "auto" and ray_connected()):
        if not ray_connected():
            raise ConfigurationError("parallel='ray' needs a process connected to Ray")
        return RayTasks()
    return ThreadTasks(threads)


class ThreadTasks:
    """Calls on a thread pool in this process."""

    name = "threads"

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads),
                                        thread_name_prefix="storage-task")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pool.submit(fn, *args)

    def wait(self, handles: list[Any]) -> tuple[list[Any], list[Any]]:
        done, running = wait(handles, return_when=FIRST_COMPLETED)
        return [f.result() for f in handles if f in done], [f for f in handles if f in running]

    def close(self, handles: list[Any]) -> None:
        for future in handles:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


_REMOTE: dict[float, Any] = {}


def _in_background(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` at background CPU priority (``musicfn.priority``): what a task runs."""
    return call_in_background(fn, *args)


def _remote(num_cpus: float) -> Any:
    """``_in_background`` as a Ray remote function (made once per process and CPU share)."""
    import ray

    remote = _REMOTE.get(num_cpus)
    if remote is None:
        remote = _REMOTE.setdefault(num_cpus, ray.remote(
            num_cpus=num_cpus, max_retries=3, retry_exceptions=False)(_in_background))
    return remote


async def run_task(fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
    """``fn(*args)`` as a Ray task when connected to Ray (anywhere in the cluster), else on
    a thread here; awaited. ``fn`` must be a module-level function with picklable arguments
    and result."""
    if not ray_connected():
        return await asyncio.to_thread(fn, *args)
    import ray

    try:
        return await _remote(num_cpus).remote(fn, *args)
    except ray.exceptions.RayTaskError as exc:
        raise original_error(exc) from None


class RayTasks:
    """Calls as Ray tasks (one CPU each; retried only when a worker dies)."""

    name = "ray"

    def __init__(self) -> None:
        import ray

        self._ray = ray

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return _remote(1.0).remote(fn, *args)

    def wait(self, handles: list[Any]) -> tuple[list[Any], list[Any]]:
        ray = self._ray
        done, running = ray.wait(handles, num_returns=1)
        if running:  # take whatever else is ready too
            more, running = ray.wait(running, num_returns=len(running), timeout=0)
            done += more
        try:
            return ray.get(done), running
        except ray.exceptions.RayTaskError as exc:
            raise original_error(exc) from None

    def close(self, handles: list[Any]) -> None:
        for ref in handles:
            try:
                self._ray.cancel(ref)
            except Exception:  # noqa: S112 - best effort: it may have finished meanwhile
                continue
