"""Reads of the job queue: one job, a batch's jobs, a track with its job, statuses for
watchers, the queue depth, and the jobs no runner takes care of (``musicfn verify``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from storage.catalogue.database import Database
from storage.catalogue.schema import naive_utc
from storage.jobs_schema import COLUMNS, JobRecord, JobView, job_from_row
from storage.keys import utc_now
from storage.sidecar import Sidecar


class JobReads:
    """Queries on ``jobs`` (and its tracks)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def view(self, track_id: str) -> JobView | None:
        """A track and its job (None when there is no such track)."""
        with self.db.lock:
            doc = self.db.scalar("SELECT doc FROM tracks WHERE id = ?", [track_id])
            row = self.db.one(f"SELECT {COLUMNS} FROM jobs WHERE id = ?",  # noqa: S608
                            [track_id])
        if doc is None:
            return None
        return JobView(track=Sidecar.from_json(doc), job=None if row is None else job_from_row(row))

    def statuses(self, track_ids: Sequence[str]) -> dict[str, tuple[str, float | None]]:
        """(status, progress) of each known track, in one query (for watchers)."""
        if not track_ids:
            return {}
        with self.db.lock:
            rows = self.db.con.execute(
                "SELECT t.id, t.status, j.progress FROM tracks t LEFT JOIN jobs j "
                "ON j.id = t.id WHERE t.id IN (SELECT unnest(?))", [list(track_ids)]).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def job(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        with self.db.lock:
            row = self.db.one(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", [job_id])  # noqa: S608
        return None if row is None else job_from_row(row)

    def jobs_of(self, parent_id: str) -> list[JobRecord]:
        """The jobs a batch (``parent_id``) spawned."""
        with self.db.lock:
            rows = self.db.con.execute(f"SELECT {COLUMNS} FROM jobs WHERE parent_id = ? "  # noqa: S608
                                     "ORDER BY id", [parent_id]).fetchall()
        return [job_from_row(r) for r in rows]

    def queue_depth(self) -> int:
        """Jobs queued or running, over every replica and runner."""
        with self.db.lock:
            return self.depth_in_transaction()

    def stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """Unfinished jobs no runner is taking care of (for ``musicfn verify``): running ones
        whose lease expired more than ``older_than_s`` ago, and, when no lease is live at all
        (no runner working), queued ones runnable for longer than that."""
        now = utc_now()
        cutoff = naive_utc(now - timedelta(seconds=older_than_s))
        with self.db.lock:
            rows = self.db.con.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE "  # noqa: S608
                "(state = 'running' AND lease_expires_at < ?) OR "
                "(state = 'queued' AND not_before < ? AND NOT EXISTS (SELECT 1 FROM jobs "
                "WHERE state = 'running' AND lease_expires_at >= ?)) ORDER BY id",
                [cutoff, cutoff, naive_utc(now)]).fetchall()
        return [job_from_row(r) for r in rows]

    def depth_in_transaction(self) -> int:
        """``queue_depth`` with the lock already held."""
        row = self.db.one("SELECT count(*) FROM jobs WHERE state <> 'done'")
        return int(row[0]) if row else 0
