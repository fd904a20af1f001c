"""CLI commands attaching to a running Ray cluster handle Ray's token auth themselves.

The session's cluster (``ray_cluster``) runs with token auth (Ray's default; the token in
``~/.ray/auth_token``). Ray turns token auth on by itself only for a cluster it finds, never
for an explicit ``RAY_ADDRESS``; ``musicfn`` does it for the attach, so no
``RAY_AUTH_MODE=token`` has to be exported, and a refused or missing token is named at once
(``ray_auth_failed``) instead of "no Ray cluster reachable" after Ray's retries (~21 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from musicfn.settings import Settings
from storage.objects import ObjectStore
from tests.support import musicfn_env

pytestmark = pytest.mark.ray

MUSICFN = str(Path(sys.executable).parent / "musicfn")
# An auth failure must show well before Ray's own retries give up (~21 s); the CLI itself
# takes ~2 s to import Ray on an idle machine.
FAST_S = 12.0
VERIFY = ("verify", "--catalogue", "owner", "--grace", "0")
WATCH = ("watch", "--once", "--json")


def cli_env(settings: Settings, ray_cluster: Any, **extra: str) -> dict[str, str]:
    """A ``musicfn`` subprocess's environment: the test cluster's address, no
    ``RAY_AUTH_MODE`` (this pytest process got ``token`` from its own ``ray.init``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MUSICFN_") and k != "RAY_AUTH_MODE"}
    env.update(musicfn_env(settings), RAY_ADDRESS=ray_cluster.address_info["gcs_address"],
               **extra)
    return env


def musicfn(env: dict[str, str], *args: str,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUSICFN, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def test_verify_attaches_without_ray_auth_mode(ray_cluster: Any, settings: Settings,
                                               objects: ObjectStore) -> None:
    import ray

    from storage.catalogue.actor import catalogue_actor

    owner = catalogue_actor(settings.catalogue_file, namespace=settings.ray_namespace,
                            watch_interval_s=0)
    try:
        ray.get(owner.upsert.remote([]))  # running, holding the file
        env = cli_env(settings, ray_cluster)
        assert "RAY_AUTH_MODE" not in env
        out = musicfn(env, *VERIFY)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "via the owner actor" in out.stdout and "OK: catalogue and bucket agree" in \
            out.stdout
    finally:
        ray.kill(owner)


def test_watch_attaches_without_ray_auth_mode(ray_cluster: Any, settings: Settings,
                                              objects: ObjectStore) -> None:
    """``watch`` joins the running cluster (ray_session.connect) instead of starting one."""
    out = musicfn(cli_env(settings, ray_cluster), *WATCH)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"listed": 0' in out.stdout


@pytest.mark.parametrize("command", [VERIFY, WATCH], ids=["verify", "watch"])
def test_wrong_token_fails_fast_and_says_so(ray_cluster: Any, settings: Settings,
                                            objects: ObjectStore,
                                            command: tuple[str, ...]) -> None:
    env = cli_env(settings, ray_cluster, RAY_AUTH_TOKEN="not-the-cluster-token")
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    out = musicfn(env, *command, timeout=FAST_S)  # TimeoutExpired = not fast
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "[ray_auth_failed]" in last and "InvalidAuthToken" in last, out.stderr
    assert "RAY_AUTH_TOKEN" in last  # where the refused token came from
    assert "no Ray cluster reachable" not in out.stderr


def test_no_token_here_fails_fast_and_says_so(ray_cluster: Any, settings: Settings,
                                              objects: ObjectStore, tmp_path: Path) -> None:
    env = cli_env(settings, ray_cluster, HOME=str(tmp_path))  # no ~/.ray/auth_token
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    out = musicfn(env, *VERIFY, timeout=FAST_S)
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "[ray_auth_failed]" in last and "none was found" in last, out.stderr


def test_auth_disabled_here_is_named(ray_cluster: Any, settings: Settings,
                                     objects: ObjectStore) -> None:
    out = musicfn(cli_env(settings, ray_cluster, RAY_AUTH_MODE="disabled"), *VERIFY,
                  timeout=FAST_S)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[ray_auth_failed]" in out.stderr and "RAY_AUTH_MODE=disabled" in out.stderr
