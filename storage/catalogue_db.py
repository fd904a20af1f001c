"""The DuckDB connection under the catalogue: opening, locking errors, migrations, transactions.

DuckDB allows a single read-write process per file; opening a file another process holds
raises CatalogueLockedError naming the file and the holder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from musicfn.errors import CatalogueCorruptError, CatalogueError, CatalogueLockedError
from storage.catalogue_schema import MIGRATIONS, SCHEMA_VERSION, naive_utc
from storage.keys import utc_now


class CatalogueConnection:
    """One DuckDB connection with a lock, schema migrations and transaction helpers."""

    def __init__(self, path: Path | str, *, checkpoint_mb: int = 256) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._checkpoint_mb = int(checkpoint_mb)
        self._con = self._connect()
        self._migrate()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise CatalogueLockedError(
                    f"catalogue {self.path} is locked by another process ({_holder(text)}): "
                    "DuckDB allows one read-write process per file; stop it or use the "
                    "running musicfn service") from None
            raise CatalogueError(f"cannot open catalogue {self.path}: {text}") from None
        except duckdb.Error as exc:
            raise CatalogueCorruptError(f"{self.path} is not a readable DuckDB catalogue: "
                                        f"{exc}") from None
        # DuckDB checkpoints whenever the WAL passes the threshold, and every checkpoint
        # re-serialises the primary-key index: at the default 16 MB that halves bulk ingest
        # (41k vs 85k rows/s on 1 M rows). The price is a longer WAL replay after a crash.
        con.execute(f"SET checkpoint_threshold = '{self._checkpoint_mb}MB'")
        return con

    def _migrate(self) -> None:
        with self._lock:
            self._con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                              "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
            row = self._one("SELECT max(version) FROM schema_migrations")
            current = (row[0] if row else None) or 0
            if current > SCHEMA_VERSION:
                raise CatalogueError(f"catalogue {self.path} has schema v{current}, newer than "
                                     f"this musicfn (v{SCHEMA_VERSION}): upgrade musicfn")
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                self._con.execute("BEGIN")
                try:
                    for sql in statements:
                        self._con.execute(sql)
                    self._con.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                                      [version, naive_utc(utc_now())])
                    self._con.execute("COMMIT")
                except BaseException:
                    self._con.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        with self._lock:
            row = self._one("SELECT max(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    def checkpoint(self) -> None:
        """Write the WAL into the file and reopen the connection (after bulk loads).

        The connection that bulk-loaded rows keeps scanning its in-memory segments even after
        a checkpoint; a fresh one scans the compressed, zone-mapped row groups: a filtered
        query on 1 M rows takes 29 ms before and 6 ms after.
        """
        with self._lock:
            self._con.execute("CHECKPOINT")
            self._con.close()
            self._con = self._connect()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of ``sql`` or None (drains the result: DuckDB keeps it open otherwise)."""
        rows = self._con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _transaction(self) -> _Transaction:
        return _Transaction(self._con)

    def _execute_with(self, table: pa.Table, sql: str,
                      before: tuple[str, list[Any]] | None = None) -> None:
        """Run ``sql`` (which reads the Arrow ``table`` as ``_batch``) in one transaction."""
        with self._lock:
            self._con.register("_batch", table)
            try:
                with self._transaction():
                    if before is not None:
                        self._con.execute(*before)
                    self._con.execute(sql)
            finally:
                self._con.unregister("_batch")



class _Transaction:
    """BEGIN/COMMIT around a block; ROLLBACK on any error. Re-raises DuckDB errors as ours."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is None:
            self._con.execute("COMMIT")
            return
        self._con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):
            raise CatalogueError(f"catalogue write failed: {exc}") from exc


def _holder(duckdb_message: str) -> str:
    """The 'PID n' part of DuckDB's lock message, if any."""
    start = duckdb_message.find("(PID ")
    if start < 0:
        return "holder unknown"
    end = duckdb_message.find(")", start)
    return duckdb_message[start + 1 : end]
