"""The catalogue for a CLI command, whether or not the service runs: the one place that decides.

DuckDB allows one read-write process per file, and the running service's catalogue owner actor
holds it. So ``open_catalogue_access`` opens the file when it is free (service stopped, as
before), and when it is locked by the service goes through the service's owner actor instead:
its Ray cluster is the one ``--ray-address`` names (``verify``), else the cluster of the
process holding the file (``ray_session.service_ray_address``), else ``RAY_ADDRESS``, else
the local cluster Ray finds. Attaching handles Ray's token auth (no ``RAY_AUTH_MODE=token``
to export). Either way the command gets a ``CatalogueAccess``: the file's ``Catalogue`` or
an ``OwnerCatalogue``.

A file locked by something that is not a musicfn service (another ``musicfn`` command, a
script) still fails at once with one ``catalogue_locked`` line naming the file and the PID.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import pyarrow as pa

from musicfn.errors import CatalogueError, CatalogueLockedError
from musicfn.settings import Settings
from musicfn_cli.commands.ray_session import lock_holder_pid, ray_address_of, service_ray_address
from storage.catalogue.actor import OwnerClient, connect_owner
from storage.catalogue.events import EventRecord
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.catalogue.store import Catalogue
from storage.catalogue.tracks import CatalogueStats
from storage.jobs_schema import JobRecord
from storage.keys import utc_now

log = logging.getLogger(__name__)

CatalogueMode = Literal["auto", "owner", "file"]
_PRUNE_PAGE = 10_000  # rows per page when the owner client looks for rows to prune


class CatalogueAccess(Protocol):
    """What the catalogue commands (ls, stats, reindex, cleanup, verify) need of a catalogue:
    ``storage.catalogue.store.Catalogue`` itself, or ``OwnerCatalogue``."""

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks, newest first, with the next page's cursor."""
        ...

    def stats(self, top: int = 10) -> CatalogueStats:
        """Counts by status, bytes per UTC day, the most used prompts."""
        ...

    def delete(self, track_ids: Iterable[str]) -> int:
        """Remove rows by id; how many existed."""
        ...

    def upsert_table(self, table: pa.Table) -> int:
        """Upsert sidecar rows (``sidecars_table``); how many."""
        ...

    def record_events(self, events: Iterable[EventRecord]) -> int:
        """Record trigger events (their idempotency records)."""
        ...

    def rebuild_prompts(self) -> None:
        """Recompute prompt usage from the tracks."""
        ...

    def prune_completed(self, keep_ids: set[str]) -> int:
        """Delete completed rows whose track is not in ``keep_ids``."""
        ...

    def checkpoint(self) -> None:
        """Write the WAL into the database file."""
        ...

    def stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """Unfinished jobs no runner takes care of."""
        ...


class OwnerCatalogue:
    """The running service's catalogue owner actor behind ``CatalogueAccess``."""

    def __init__(self, client: OwnerClient) -> None:
        self.client = client
        # Rows completed after this are never pruned: a job may commit while reindex lists.
        self.opened_at: datetime = utc_now()

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks from the owner."""
        return self.client.run(self.client.catalogue.list_tracks(query))

    def stats(self, top: int = 10) -> CatalogueStats:
        """The owner's statistics."""
        return self.client.run(self.client.catalogue.stats(top))

    def delete(self, track_ids: Iterable[str]) -> int:
        """Remove rows by id through the owner."""
        return self.client.run(self.client.catalogue.delete(list(track_ids)))

    def upsert_table(self, table: pa.Table) -> int:
        """Upsert rows through the owner."""
        return self.client.run(self.client.catalogue.upsert_table(table))

    def record_events(self, events: Iterable[EventRecord]) -> int:
        """Record trigger events through the owner."""
        return self.client.run(self.client.catalogue.record_events(list(events)))

    def rebuild_prompts(self) -> None:
        """Recompute prompt usage in the owner."""
        self.client.run(self.client.catalogue.rebuild_prompts())

    def prune_completed(self, keep_ids: set[str]) -> int:
        """Delete completed rows not in ``keep_ids`` that were completed before this client
        was opened (the service keeps committing tracks meanwhile: those rows stay)."""
        stale: list[str] = []
        query = TrackQuery(status="completed", limit=_PRUNE_PAGE)
        while True:
            page = self.list_tracks(query)
            stale += [sc.id for sc in page.items if sc.id not in keep_ids
                      and (sc.completed_at is None or sc.completed_at < self.opened_at)]
            if page.next_cursor is None:
                break
            query = query.model_copy(update={"cursor": page.next_cursor})
        return self.delete(stale)

    def checkpoint(self) -> None:
        """Checkpoint the owner's file."""
        self.client.run(self.client.catalogue.checkpoint())

    def stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """Stranded jobs, from the owner."""
        return self.client.run(self.client.catalogue.stale_jobs(older_than_s))

    def close(self) -> None:
        """Disconnect from Ray if connecting was done for this client."""
        self.client.close()


@dataclass(frozen=True)
class OpenedCatalogue:
    """A command's catalogue and where it is: ``file <path>`` or ``owner actor``."""

    catalogue: CatalogueAccess
    source: str


@contextlib.contextmanager
def open_catalogue_access(settings: Settings, *, mode: CatalogueMode = "auto",
                          ray_address: str | None = None) -> Iterator[OpenedCatalogue]:
    """The catalogue for one command, closed (or disconnected) at the end of the block.

    ``mode``: ``auto`` (the file when free, else the running service's owner), ``owner``
    (the owner, required) or ``file``. ``ray_address`` (default: the holder's cluster, else
    ``RAY_ADDRESS``, else the local one) is where the owner is looked for.
    """
    if mode == "owner":
        owner = _connect(settings, ray_address or
                         service_ray_address(settings.catalogue_file))
    else:
        try:
            catalogue = Catalogue(settings.catalogue_file,
                                     checkpoint_mb=settings.catalogue_checkpoint_mb)
        except CatalogueLockedError as locked:
            if mode == "file":
                raise
            log.info("%s: going through the running service's owner actor", locked.message)
            try:
                owner = _connect(settings, ray_address or _service_address(locked))
            except CatalogueError as exc:
                if isinstance(exc, CatalogueLockedError):
                    raise
                raise CatalogueLockedError(
                    f"{locked.message}; and no musicfn service owning it was reachable "
                    f"({exc.message}): set RAY_ADDRESS to the service's Ray cluster") from None
        else:
            with contextlib.closing(catalogue):
                yield OpenedCatalogue(catalogue, f"file {settings.catalogue_file}")
            return
    try:
        yield OpenedCatalogue(owner, "owner actor")
    finally:
        owner.close()


def _service_address(locked: CatalogueLockedError) -> str | None:
    """Where to look for the owner of a locked file: the holder's Ray cluster; else
    ``RAY_ADDRESS`` or the local cluster (None). A holder that is known and not a Ray
    worker is no service: the lock error stands."""
    pid = lock_holder_pid(locked.message)
    if pid is None:
        return None
    address = ray_address_of(pid)
    if address is None:
        raise locked
    return address


def _connect(settings: Settings, address: str | None) -> OwnerCatalogue:
    """A client of the owner of ``settings``' catalogue in the cluster at ``address``."""
    client = connect_owner(settings.catalogue_file, address=address, required=True,
                           namespace=settings.ray_namespace)
    if client is None:  # required=True raises instead
        raise CatalogueError("no owner actor", code="catalogue_owner_unreachable")
    return OwnerCatalogue(client)
