"""The catalogue owner as a named Ray actor, so every process goes through one connection.

The actor restarts after a crash (``max_restarts=-1``) and re-opens the same DuckDB file;
writes are idempotent upserts, so calls interrupted by a crash are retried
(``max_task_retries``) without creating duplicates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from storage.catalogue import Catalogue

CATALOGUE_ACTOR_PREFIX = "musicfn-catalogue"


def owner_name(path: Path | str) -> str:
    """The actor name of the owner of one catalogue file: one owner per file, so services
    with different catalogues never share an owner."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return f"{CATALOGUE_ACTOR_PREFIX}-{digest}"


def catalogue_actor(path: Path | str, *, checkpoint_mb: int = 256,
                    name: str | None = None,
                    namespace: str | None = None, detached: bool = False,
                    max_task_retries: int = 3) -> Any:
    """The handle of the catalogue owner actor, created on first use (``get_if_exists``).

    Call methods of ``storage.catalogue.Catalogue`` on it with ``.remote(...)``. With
    ``detached`` the actor outlives the driver that created it (what a service wants).
    """
    import ray

    options: dict[str, Any] = {
        "name": name or owner_name(path),
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": max_task_retries,
        "num_cpus": 0,  # I/O bound; never hold a CPU slot the audio work needs
    }
    if namespace is not None:
        options["namespace"] = namespace
    if detached:
        options["lifetime"] = "detached"
    actor_cls = ray.remote(Catalogue)
    return actor_cls.options(**options).remote(str(path), checkpoint_mb=checkpoint_mb)
