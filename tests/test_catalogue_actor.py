"""The catalogue owner as a named Ray actor on a real local cluster."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storage.catalogue.actor import catalogue_actor
from storage.keys import new_id
from storage.sidecar import Sidecar

pytestmark = pytest.mark.ray


def pending(n: int) -> Sidecar:
    return Sidecar(id=new_id(), kind="generation", status="pending",
                   created_at=datetime.now(UTC), prompt=f"p{n}")


def test_every_process_reaches_one_owner(ray_cluster: Any, tmp_data: Path) -> None:
    import ray

    path = tmp_data / "actor.duckdb"
    owner = catalogue_actor(path, name="cat-one-owner")
    rows = [pending(i) for i in range(20)]
    assert ray.get(owner.upsert.remote(rows)) == 20

    @ray.remote(num_cpus=0)
    def from_another_worker(p: str) -> int:
        from storage.catalogue.actor import catalogue_actor as get_owner
        handle = get_owner(p, name="cat-one-owner")  # the same named actor, not a new file
        return int(ray.get(handle.count.remote()))

    assert ray.get(from_another_worker.remote(str(path))) == 20
    ray.kill(owner)


@pytest.mark.fault
def test_owner_restarts_after_sigkill_and_keeps_acknowledged_rows(ray_cluster: Any,
                                                                  tmp_data: Path) -> None:
    import ray

    path = tmp_data / "restart.duckdb"
    owner = catalogue_actor(path, name="cat-restart")
    acked = [pending(i) for i in range(100)]
    ray.get(owner.upsert.remote(acked))
    pid = ray.get(owner.__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # calls during the restart may fail; the restarted owner must answer
        try:
            count = ray.get(owner.count.remote(), timeout=30)
            break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert count == 100
    assert ray.get(owner.__ray_call__.remote(lambda self: os.getpid())) != pid
    assert ray.get(owner.ids.remote()) == {s.id for s in acked}
    ray.kill(owner)
