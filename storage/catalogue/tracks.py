"""The ``tracks`` table (one row per track, the sidecar's document and its indexed columns)
and prompt usage.

Every write is one transaction: when a method returns, its rows are durable (DuckDB's WAL).
The ``*_in_transaction`` helpers write inside a transaction a caller holds (a job's end).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from musicfn.errors import CatalogueError, InvalidTransitionError, NotFoundError
from storage.catalogue.database import Database
from storage.catalogue.queries import TrackPage, TrackQuery, encode_cursor, where_clause
from storage.catalogue.schema import (
    INSERT_TRACKS_SQL,
    TRACK_SCHEMA,
    UPDATE_TRACKS_SQL,
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


class CatalogueStats(BaseModel):
    counts_by_status: dict[str, int]
    total_tracks: int
    total_bytes: int
    bytes_by_day: dict[str, int]
    top_prompts: list[tuple[str, int]]


class TrackTable:
    """Tracks: upserts, lifecycle, queries and stats."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        self.db.execute_with(table, UPSERT_TRACKS_SQL)
        return int(table.num_rows)

    def transition(self, track_id: str, status: TrackStatus, *,
                   error: ErrorInfo | None = None) -> Sidecar:
        """Move one row to ``status`` (pending → processing → completed | failed)."""
        with self.db.lock:
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
        with self.db.lock:
            current = self.get(sidecar.id)
            if current is not None and "completed" not in _TRANSITIONS[current.status]:
                raise InvalidTransitionError(
                    f"track {sidecar.id} is {current.status}; cannot become completed")
            self.upsert([sidecar])

    def put_many_in_transaction(self, sidecars: Sequence[Sidecar]) -> None:
        """Write rows exactly as given (distinct ids), inside the caller's transaction (lock
        held): one UPDATE for all of them, in place (half the cost of a delete and insert);
        rows that did not exist are inserted then."""
        if not sidecars:
            return
        table = sidecars_table(sidecars)
        if self.db.insert_batch(table, UPDATE_TRACKS_SQL) < len(sidecars):  # some are new
            self.db.con.execute("DELETE FROM tracks WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                                [[sc.id for sc in sidecars]])
            self.db.insert_batch(table, UPSERT_TRACKS_SQL)

    def add_pending_in_transaction(self, tracks: Sequence[Sidecar], now: datetime | None) -> None:
        """Insert the rows of just-accepted jobs (new ids) and count their prompts, one
        statement each, inside the caller's transaction (lock held)."""
        if not tracks:
            return
        self.db.insert_batch(sidecars_table(tracks), INSERT_TRACKS_SQL)
        counts = Counter(t.prompt for t in tracks if t.prompt)
        if counts:
            self.db.con.execute(
                "INSERT INTO prompts SELECT unnest(?), unnest(?), ?, ? ON CONFLICT (text) "
                "DO UPDATE SET used_count = prompts.used_count + excluded.used_count, "
                "last_used = excluded.last_used", [list(counts), list(counts.values()), now, now])

    def set_status_many_in_transaction(
            self, updates: Sequence[tuple[str, str, ErrorInfo | None]]) -> None:
        """Move unfinished rows to a status inside the caller's transaction, for each (track
        id, status, error): one read and one write for all of them. A completed or canceled
        row, or a missing one, is left alone."""
        if not updates:
            return
        rows = self.db.con.execute(
            "SELECT id, doc FROM tracks WHERE id IN (SELECT unnest(?::VARCHAR[]))",
            [[u[0] for u in updates]]).fetchall()
        current = {str(r[0]): Sidecar.from_json(r[1]) for r in rows}
        changed: dict[str, Sidecar] = {}
        for track_id, status, error in updates:
            row = changed.get(track_id) or current.get(track_id)
            if row is None or row.status in ("completed", "canceled"):
                continue
            update: dict[str, Any] = {"status": status}
            if error is not None:
                update["error"] = error
            changed[track_id] = row.model_copy(update=update)
        self.put_many_in_transaction(list(changed.values()))

    def _write_exact(self, sc: Sidecar) -> None:
        """Write one row regardless of rank (for validated explicit transitions)."""
        self.db.execute_with(sidecars_table([sc]), UPSERT_TRACKS_SQL,
                           before=("DELETE FROM tracks WHERE id = ?", [sc.id]))

    def delete(self, track_ids: Iterable[str]) -> int:
        """Remove rows by id; returns how many existed."""
        ids = list(track_ids)
        if not ids:
            return 0
        with self.db.lock, self.db.transaction():
            row = self.db.one("SELECT count(*) FROM tracks WHERE id IN "
                                    "(SELECT unnest(?))", [ids])
            self.db.con.execute("DELETE FROM tracks WHERE id IN (SELECT unnest(?))", [ids])
        return int(row[0]) if row else 0

    def record_prompts(self, prompts: Iterable[str], at: datetime | None = None) -> None:
        """Count uses of prompts (usage analytics), batched."""
        counts = Counter(p for p in prompts if p)
        if not counts:
            return
        when = naive_utc(at or utc_now())
        table = pa.table({"text": list(counts), "n": list(counts.values()),
                          "ts": [when] * len(counts)})
        self.db.execute_with(
            table,
            "INSERT INTO prompts SELECT text, n, ts, ts FROM _batch "
            "ON CONFLICT (text) DO UPDATE SET "
            "used_count = prompts.used_count + excluded.used_count, "
            "first_used = least(prompts.first_used, excluded.first_used), "
            "last_used = greatest(prompts.last_used, excluded.last_used)")

    def rebuild_prompts(self) -> None:
        """Recompute prompt usage from the tracks table (after a reindex)."""
        with self.db.lock, self.db.transaction():
            self.db.con.execute("DELETE FROM prompts")
            self.db.con.execute(
                "INSERT INTO prompts SELECT prompt, count(*), min(created_at), max(created_at) "
                "FROM tracks WHERE prompt IS NOT NULL AND prompt <> '' GROUP BY prompt")

    def prune_completed(self, keep_ids: set[str]) -> int:
        """Delete finished rows whose track is not in ``keep_ids`` (gone from the bucket)."""
        with self.db.lock:
            rows = self.db.con.execute(
                "SELECT id FROM tracks WHERE status = 'completed'").fetchall()
        stale = [r[0] for r in rows if r[0] not in keep_ids]
        return self.delete(stale)

    # -- reads -----------------------------------------------------------------------------

    def get(self, track_id: str) -> Sidecar | None:
        """One track by id, or None."""
        with self.db.lock:
            row = self.db.one("SELECT doc FROM tracks WHERE id = ?", [track_id])
        return None if row is None else Sidecar.from_json(row[0])

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks matching ``query``, newest first, with the next page's cursor."""
        q = query or TrackQuery()
        where, params = where_clause(q)
        with self.db.lock:
            rows = self.db.con.execute(
                f"SELECT id, doc FROM tracks {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                [*params, q.limit + 1]).fetchall()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        items = [Sidecar.from_json(doc) for _, doc in rows]
        return TrackPage(items=items, next_cursor=encode_cursor(rows[-1][0]) if more else None)

    def by_source(self, source_key: str) -> list[Sidecar]:
        """Tracks processed from the object at ``source_key``."""
        with self.db.lock:
            rows = self.db.con.execute("SELECT doc FROM tracks WHERE source_key = ?",
                                     [source_key]).fetchall()
        return [Sidecar.from_json(r[0]) for r in rows]

    def count(self, query: TrackQuery | None = None) -> int:
        where, params = where_clause(query or TrackQuery())
        with self.db.lock:
            row = self.db.one(f"SELECT count(*) FROM tracks {where}",  # noqa: S608
                                    params)
        return int(row[0]) if row else 0

    def rows(self) -> list[tuple[Any, ...]]:
        """Every tracks row, sorted by id (for comparisons and exports)."""
        with self.db.lock:
            return self.db.con.execute("SELECT * FROM tracks ORDER BY id").fetchall()

    def ids(self) -> set[str]:
        with self.db.lock:
            return {r[0] for r in self.db.con.execute("SELECT id FROM tracks").fetchall()}

    def stats(self, top: int = 10) -> CatalogueStats:
        """Counts by status, bytes stored per UTC day, and the most used prompts."""
        with self.db.lock:
            by_status = dict(self.db.con.execute(
                "SELECT status, count(*) FROM tracks GROUP BY status").fetchall())
            total = self.db.one(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM tracks") or (0, 0)
            by_day = self.db.con.execute(
                "SELECT strftime(created_at, '%Y-%m-%d') AS day, sum(bytes) FROM tracks "
                "WHERE status = 'completed' GROUP BY day ORDER BY day").fetchall()
            prompts = self.db.con.execute(
                "SELECT text, used_count FROM prompts ORDER BY used_count DESC, text "
                "LIMIT ?", [top]).fetchall()
        return CatalogueStats(
            counts_by_status={k: int(v) for k, v in by_status.items()},
            total_tracks=int(total[0]), total_bytes=int(total[1]),
            bytes_by_day={d: int(b or 0) for d, b in by_day},
            top_prompts=[(t, int(n)) for t, n in prompts],
        )
