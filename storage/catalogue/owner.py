"""The catalogue as its one owner holds it: notices a deleted or replaced file and rebuilds.

The DuckDB file is derived data (the bucket is the source of truth), so losing it must not lose
tracks. The owner watches the file's identity (device + inode) from a background thread:

* **Deleted or replaced while open.** The open connection still reads the unlinked file, so
  nothing acknowledged is lost: the owner exports everything it holds (tracks in any status,
  prompts, trigger events, cursors, idempotency keys), opens a fresh file at the same path and
  imports it, then reconciles with the bucket (``storage.reindex``: every sidecar upserted, the
  bucket wins for committed tracks).
* **Missing at start** (deleted while the owner was down, or a first start): a fresh file is
  created and rebuilt from the sidecars in the bucket.

Reconciliation runs without the lock, so the owner keeps serving while it lists the bucket;
upserts are idempotent and never move a row back in its lifecycle. It does not prune rows
(a job committing during the listing must keep its row); ``musicfn reindex`` does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from musicfn.errors import MusicfnError
from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.jobs_schema import Enqueued, GenerationAccept, JobRecord, Refused

log = logging.getLogger(__name__)

FileIdentity = tuple[int, int] | None
ACCEPT_GROUP = "accept"  # the owner actor's concurrency group for enqueue (acknowledgements)


def file_identity(path: Path) -> FileIdentity:
    """(device, inode) of ``path``, or None when there is no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class RebuildStatus(BaseModel):
    """What the owner has rebuilt so far (for health checks, tests and operators)."""

    path: str
    rebuilds: int = 0  # file re-created (deleted or replaced while open)
    reconciled: int = 0  # completed reconciliations with the bucket
    pending_reconcile: bool = False
    last_reason: str | None = None
    last_salvaged_rows: int | None = None
    last_upserted: int | None = None
    last_error: str | None = None


class CatalogueOwner(Catalogue):
    """A ``Catalogue`` that re-creates its file when it disappears and refills it.

    ``settings`` (S3 endpoint, bucket, prefixes) enables reconciliation with the bucket;
    without it a lost file is still re-created from what the open connection holds.
    ``watch_interval_s`` = 0 turns the watcher thread off (call ``check_file`` yourself).
    """

    def __init__(self, path: Path | str, *, checkpoint_mb: int = 256,
                 settings: Settings | None = None, watch_interval_s: float = 1.0) -> None:
        existed = Path(path).exists()
        super().__init__(path, checkpoint_mb=checkpoint_mb)
        self._settings = settings
        self._identity = file_identity(self.path)
        self._status = RebuildStatus(path=str(self.path),
                                     pending_reconcile=settings is not None and not existed)
        if not existed:
            self._status.last_reason = "file missing at start"
        self._reconcile_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, args=(watch_interval_s,),
                                             name="catalogue-watch", daemon=True)
            self._watcher.start()

    # -- public ----------------------------------------------------------------------------

    def check_file(self) -> bool:
        """Rebuild now if the file at the path is not the one open; then reconcile if due.

        Returns True when the file was re-created.
        """
        rebuilt = False
        with self.db.lock:
            current = file_identity(self.path)
            if current != self._identity:
                reason = "file deleted" if current is None else "file replaced"
                self._recreate(reason)
                rebuilt = True
        if self._status.pending_reconcile:
            self._reconcile()
        return rebuilt

    def rebuild_status(self) -> RebuildStatus:
        """Counts and the outcome of the last rebuild."""
        return self._status.model_copy()

    def checkpoint(self) -> None:
        """As ``Catalogue.checkpoint``, after making sure the open file is still the one
        at the path (a reconnect to a deleted path would drop what the old file held)."""
        with self.db.lock:
            if file_identity(self.path) != self._identity:
                self._recreate("file deleted (seen at checkpoint)")
            super().checkpoint()
            self._identity = file_identity(self.path)

    def close(self) -> None:
        self._stop.set()
        super().close()

    # -- internals -------------------------------------------------------------------------

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.check_file()
            except Exception:  # keep watching; the next tick retries
                log.exception("catalogue file check failed")

    def _recreate(self, reason: str) -> None:
        """Copy what the open connection holds into a fresh file at the path (lock held)."""
        log.warning("catalogue %s: %s; re-creating it", self.path, reason)
        # Beside the catalogue: the same file system, which has room for it.
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the whole directory may be gone
        export_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.rebuild-",
                                           dir=self.path.parent))
        salvaged: int | None = None
        try:
            try:
                self.db.con.execute("CHECKPOINT")
                salvaged = int((self.db.one("SELECT count(*) FROM tracks") or (0,))[0])
                self.db.con.execute(f"EXPORT DATABASE '{_sql_path(export_dir)}' (FORMAT PARQUET)")
            except Exception as exc:  # the old file is unreadable too: the bucket must do
                log.error("could not salvage the open catalogue: %s", exc)
                salvaged = None
            with contextlib.suppress(Exception):
                self.db.con.close()
            fresh = not self.path.exists()
            if fresh:
                wal = self.path.with_name(self.path.name + ".wal")
                if wal.exists():  # a WAL without its database: never replay it onto a new one
                    wal.rename(wal.with_name(f"{wal.name}.stale-{int(time.time())}"))
            self.db.con = self.db.connect()
            if fresh and salvaged is not None:
                self.db.con.execute(f"IMPORT DATABASE '{_sql_path(export_dir)}'")
            self.db.migrate()
            self.db.con.execute("CHECKPOINT")
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)
        self._identity = file_identity(self.path)
        self._status.rebuilds += 1
        self._status.last_reason = reason
        self._status.last_salvaged_rows = salvaged
        self._status.pending_reconcile = self._settings is not None

    def _reconcile(self) -> None:
        """Upsert every sidecar in the bucket (without holding the connection lock)."""
        if self._settings is None or not self._reconcile_lock.acquire(blocking=False):
            return
        try:
            from storage.objects import ObjectStore
            from storage.reindex import reindex

            objects = ObjectStore(self._settings)
            report = reindex(objects, self, self._settings, prune=False)
            self._status.pending_reconcile = False
            self._status.reconciled += 1
            self._status.last_upserted = report.upserted
            self._status.last_error = None
            log.warning("catalogue %s reconciled with the bucket: %d sidecars upserted",
                        self.path, report.upserted)
        except MusicfnError as exc:
            self._status.last_error = f"{exc.code}: {exc.message}"
            # Retry on the next tick only if the store may come back.
            self._status.pending_reconcile = exc.retryable
            log.warning("catalogue reconciliation failed (%s)%s", exc.code,
                        "; will retry" if exc.retryable else "")
        finally:
            self._reconcile_lock.release()


@functools.cache
def accepting_owner_class() -> type[CatalogueOwner]:
    """``CatalogueOwner`` whose ``enqueue`` runs in its own concurrency group (thread).

    Accepting work (a webhook's events, a generation) is one short transaction, but in the
    default group it would wait behind every processing write queued before it (claims,
    completions, leases of a burst). In ``ACCEPT_GROUP`` it only waits for the connection
    lock (the one transaction running now). Every method holds ``self.db.lock`` around the
    connection, so two threads never use it at once.
    """
    import ray

    class AcceptingOwner(CatalogueOwner):
        @ray.method(concurrency_group=ACCEPT_GROUP)  # type: ignore[misc]
        def enqueue(self, jobs: Sequence[JobRecord], *,  # type: ignore[override]
                    max_depth: int | None = None) -> list[Enqueued]:
            """``Catalogue.enqueue``, in the accept group."""
            return super().enqueue(jobs, max_depth=max_depth)

        @ray.method(concurrency_group=ACCEPT_GROUP)  # type: ignore[misc]
        def accept_generations(  # type: ignore[override]
                self, requests: Sequence[GenerationAccept]) -> list[Enqueued | Refused]:
            """``Catalogue.accept_generations``, in the accept group."""
            return super().accept_generations(requests)

    AcceptingOwner.__name__ = AcceptingOwner.__qualname__ = "CatalogueOwner"
    return AcceptingOwner


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


__all__ = ["ACCEPT_GROUP", "CatalogueOwner", "RebuildStatus", "accepting_owner_class",
           "file_identity"]
