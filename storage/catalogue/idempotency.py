"""Idempotency keys of generation requests: a key binds to the first job made with it."""

from __future__ import annotations

from musicfn.errors import ConflictError
from storage.catalogue.database import Database
from storage.catalogue.schema import naive_utc
from storage.keys import utc_now


class IdempotencyKeys:
    """``Idempotency-Key`` → track id, checked against the request body's hash."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, key: str, body_sha256: str, track_id: str) -> str:
        """Bind ``key`` to ``track_id``, or return the track it is already bound to.

        Raises ConflictError when the key was used with a different request body.
        """
        with self.db.lock, self.db.transaction():
            return self.claim_in_transaction(key, body_sha256, track_id)

    def claim_in_transaction(self, key: str, body_sha256: str, track_id: str) -> str:
        """``claim`` inside the caller's transaction (lock held)."""
        bound = self.bound_in_transaction(key, body_sha256)
        if bound is not None:
            return bound
        self.db.con.execute("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)",
                            [key, body_sha256, track_id, naive_utc(utc_now())])
        return track_id

    def bound_in_transaction(self, key: str, body_sha256: str) -> str | None:
        """The track ``key`` is bound to, or None (lock held); ConflictError when it was
        used with a different request body."""
        row = self.db.one("SELECT body_sha256, track_id FROM idempotency_keys WHERE key = ?",
                          [key])
        if row is None:
            return None
        if row[0] != body_sha256:
            raise ConflictError(f"Idempotency-Key {key!r} was used with a different request",
                                code="idempotency_key_reused")
        return str(row[1])
