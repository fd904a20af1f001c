"""The DuckDB catalogue and its one owner.

DuckDB allows a single read-write process per file, so exactly one ``Catalogue`` holds the
connection; other processes reach it through the Ray actor in ``storage.catalogue_actor``.
Every write is one transaction: when a method returns, its rows are durable (DuckDB's WAL).
Connection handling lives in ``storage.catalogue_db``, trigger state in
``storage.catalogue_events``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from musicfn.errors import CatalogueError, InvalidTransitionError, NotFoundError
from storage.catalogue_events import EventLogMixin, EventRecord
from storage.catalogue_queries import TrackPage, TrackQuery, encode_cursor, where_clause
from storage.catalogue_schema import (
    TRACK_SCHEMA,
    UPSERT_TRACKS_SQL,
    naive_utc,
    sidecars_table,
)
from storage.keys import utc_now
from storage.sidecar import ErrorInfo, Sidecar, TrackStatus

# Allowed lifecycle steps for explicit transitions (upserts of whole sidecars use STATUS_RANK).
_TRANSITIONS: dict[str, set[str]] = {
    "pending": {"processing", "failed", "canceled"},
    "processing": {"processing", "completed", "failed", "canceled"},
    "failed": {"processing", "failed"},
    "canceled": {"canceled"},
    "completed": {"completed"},
}


__all__ = ["Catalogue", "CatalogueStats", "EventRecord"]


class CatalogueStats(BaseModel):
    counts_by_status: dict[str, int]
    total_tracks: int
    total_bytes: int
    bytes_by_day: dict[str, int]
    top_prompts: list[tuple[str, int]]


class Catalogue(EventLogMixin):
    """Owner of one DuckDB catalogue file: upserts, lifecycle, queries and stats."""

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, sidecars: Sequence[Sidecar]) -> int:
        """Insert or update rows by id in one batch; a row never moves back in its lifecycle.

        Returns the number of distinct ids in the batch. Idempotent.
        """
        if not sidecars:
            return 0
        return self.upsert_table(sidecars_table(sidecars))

    def upsert_table(self, table: pa.Table) -> int:
        """Upsert a prepared Arrow batch with ``TRACK_SCHEMA`` (unique ids)."""
        if table.schema != TRACK_SCHEMA:
            raise CatalogueError("batch does not match the tracks schema")
        self._execute_with(table, UPSERT_TRACKS_SQL)
        return int(table.num_rows)

    def transition(self, track_id: str, status: TrackStatus, *,
                   error: ErrorInfo | None = None) -> Sidecar:
        """Move one row to ``status`` (pending → processing → completed | failed)."""
        with self._lock:
            current = self.get(track_id)
            if current is None:
                raise NotFoundError(f"no track {track_id} in the catalogue")
            if status not in _TRANSITIONS[current.status]:
                raise InvalidTransitionError(
                    f"track {track_id} is {current.status}; cannot become {status}")
            if status == "completed":
                raise InvalidTransitionError("complete a track with complete(sidecar)")
            updated = current.model_copy(update={"status": status, "error": error})
            self._write_exact(updated)
            return updated

    def complete(self, sidecar: Sidecar) -> None:
        """Record a finished track (its sidecar is already in the bucket)."""
        if sidecar.status != "completed":
            raise InvalidTransitionError("complete() needs a sidecar with status completed")
        with self._lock:
            current = self.get(sidecar.id)
            if current is not None and "completed" not in _TRANSITIONS[current.status]:
                raise InvalidTransitionError(
                    f"track {sidecar.id} is {current.status}; cannot become completed")
            self.upsert([sidecar])

    def _insert_track(self, sc: Sidecar) -> None:
        """Write one row inside the caller's transaction (lock held, row deleted first)."""
        self._con.register("_batch", sidecars_table([sc]))
        try:
            self._con.execute(UPSERT_TRACKS_SQL)
        finally:
            self._con.unregister("_batch")

    def _write_exact(self, sc: Sidecar) -> None:
        """Write one row regardless of rank (for validated explicit transitions)."""
        self._execute_with(sidecars_table([sc]), UPSERT_TRACKS_SQL,
                           before=("DELETE FROM tracks WHERE id = ?", [sc.id]))

    def delete(self, track_ids: Iterable[str]) -> int:
        """Remove rows by id; returns how many existed."""
        ids = list(track_ids)
        if not ids:
            return 0
        with self._lock, self._transaction():
            row = self._one("SELECT count(*) FROM tracks WHERE id IN "
                                    "(SELECT unnest(?))", [ids])
            self._con.execute("DELETE FROM tracks WHERE id IN (SELECT unnest(?))", [ids])
        return int(row[0]) if row else 0

    def record_prompts(self, prompts: Iterable[str], at: datetime | None = None) -> None:
        """Count uses of prompts (usage analytics), batched."""
        counts = Counter(p for p in prompts if p)
        if not counts:
            return
        when = naive_utc(at or utc_now())
        table = pa.table({"text": list(counts), "n": list(counts.values()),
                          "ts": [when] * len(counts)})
        self._execute_with(
            table,
            "INSERT INTO prompts SELECT text, n, ts, ts FROM _batch "
            "ON CONFLICT (text) DO UPDATE SET "
            "used_count = prompts.used_count + excluded.used_count, "
            "first_used = least(prompts.first_used, excluded.first_used), "
            "last_used = greatest(prompts.last_used, excluded.last_used)")

    def rebuild_prompts(self) -> None:
        """Recompute prompt usage from the tracks table (after a reindex)."""
        with self._lock, self._transaction():
            self._con.execute("DELETE FROM prompts")
            self._con.execute(
                "INSERT INTO prompts SELECT prompt, count(*), min(created_at), max(created_at) "
                "FROM tracks WHERE prompt IS NOT NULL AND prompt <> '' GROUP BY prompt")

    def prune_completed(self, keep_ids: set[str]) -> int:
        """Delete finished rows whose track is not in ``keep_ids`` (gone from the bucket)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT id FROM tracks WHERE status = 'completed'").fetchall()
        stale = [r[0] for r in rows if r[0] not in keep_ids]
        return self.delete(stale)

    # -- reads -----------------------------------------------------------------------------

    def get(self, track_id: str) -> Sidecar | None:
        """One track by id, or None."""
        with self._lock:
            row = self._one("SELECT doc FROM tracks WHERE id = ?", [track_id])
        return None if row is None else Sidecar.from_json(row[0])

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks matching ``query``, newest first, with the next page's cursor."""
        q = query or TrackQuery()
        where, params = where_clause(q)
        with self._lock:
            rows = self._con.execute(
                f"SELECT id, doc FROM tracks {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                [*params, q.limit + 1]).fetchall()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        items = [Sidecar.from_json(doc) for _, doc in rows]
        return TrackPage(items=items, next_cursor=encode_cursor(rows[-1][0]) if more else None)

    def count(self, query: TrackQuery | None = None) -> int:
        where, params = where_clause(query or TrackQuery())
        with self._lock:
            row = self._one(f"SELECT count(*) FROM tracks {where}",  # noqa: S608
                                    params)
        return int(row[0]) if row else 0

    def rows(self) -> list[tuple[Any, ...]]:
        """Every tracks row, sorted by id (for comparisons and exports)."""
        with self._lock:
            return self._con.execute("SELECT * FROM tracks ORDER BY id").fetchall()

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._con.execute("SELECT id FROM tracks").fetchall()}

    def stats(self, top: int = 10) -> CatalogueStats:
        """Counts by status, bytes stored per UTC day, and the most used prompts."""
        with self._lock:
            by_status = dict(self._con.execute(
                "SELECT status, count(*) FROM tracks GROUP BY status").fetchall())
            total = self._one(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM tracks") or (0, 0)
            by_day = self._con.execute(
                "SELECT strftime(created_at, '%Y-%m-%d') AS day, sum(bytes) FROM tracks "
                "WHERE status = 'completed' GROUP BY day ORDER BY day").fetchall()
            prompts = self._con.execute(
                "SELECT text, used_count FROM prompts ORDER BY used_count DESC, text "
                "LIMIT ?", [top]).fetchall()
        return CatalogueStats(
            counts_by_status={k: int(v) for k, v in by_status.items()},
            total_tracks=int(total[0]), total_bytes=int(total[1]),
            bytes_by_day={d: int(b or 0) for d, b in by_day},
            top_prompts=[(t, int(n)) for t, n in prompts],
        )
