"""Trigger state in the catalogue: processed object-store events and poller cursors."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from musicfn.errors import ConflictError
from storage.catalogue_db import CatalogueConnection
from storage.catalogue_schema import naive_utc
from storage.keys import utc_now


class EventRecord(BaseModel):
    """One processed (or rejected / failed) object-store event: the idempotency record."""

    bucket: str
    key: str
    etag: str
    version_id: str = ""
    status: str  # processed | duplicate | rejected | failed
    track_id: str | None = None
    error: str | None = None
    processed_at: datetime



class EventLogMixin(CatalogueConnection):
    """Idempotency records of object-store events, and named cursors (e.g. the poller's)."""

    def record_event(self, event: EventRecord) -> None:
        with self._lock, self._transaction():
            self._con.execute(
                "INSERT OR REPLACE INTO processed_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [event.bucket, event.key, event.etag, event.version_id, event.status,
                 event.track_id, event.error, naive_utc(event.processed_at)])

    def get_event(self, bucket: str, key: str, etag: str,
                  version_id: str = "") -> EventRecord | None:
        with self._lock:
            row = self._one(
                "SELECT bucket, key, etag, version_id, status, track_id, error, processed_at "
                "FROM processed_events WHERE bucket = ? AND key = ? AND etag = ? "
                "AND version_id = ?", [bucket, key, etag, version_id])
        if row is None:
            return None
        names = ("bucket", "key", "etag", "version_id", "status", "track_id", "error")
        return EventRecord(**dict(zip(names, row[:7], strict=True)),
                           processed_at=row[7].replace(tzinfo=UTC))

    def get_cursor(self, name: str) -> str | None:
        with self._lock:
            row = self._one("SELECT value FROM cursors WHERE name = ?",
                                    [name])
        return None if row is None else str(row[0])

    def set_cursor(self, name: str, value: str) -> None:
        with self._lock, self._transaction():
            self._con.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)",
                              [name, value, naive_utc(utc_now())])

    def claim_idempotency_key(self, key: str, body_sha256: str, track_id: str) -> str:
        """Bind ``key`` to ``track_id``, or return the track it is already bound to.

        Raises ConflictError when the key was used with a different request body.
        """
        with self._lock, self._transaction():
            row = self._one("SELECT body_sha256, track_id FROM idempotency_keys WHERE key = ?",
                            [key])
            if row is None:
                self._con.execute("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)",
                                  [key, body_sha256, track_id, naive_utc(utc_now())])
                return track_id
        if row[0] != body_sha256:
            raise ConflictError(f"Idempotency-Key {key!r} was used with a different request",
                                code="idempotency_key_reused")
        return str(row[1])
