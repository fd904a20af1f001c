"""Catalogue schema: versioned migrations and the one mapping from a sidecar to a tracks row.

The same ``sidecar_rows`` feeds the online path and ``reindex``, which is why a rebuilt
catalogue holds identical rows. Timestamps are stored as naive UTC ``TIMESTAMP``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from storage.sidecar import Sidecar

# (version, statements). Append only: never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE tracks (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            completed_at TIMESTAMP,
            prompt VARCHAR,
            engine VARCHAR,
            model VARCHAR,
            seed BIGINT,
            audio_key VARCHAR,
            format VARCHAR,
            sample_rate INTEGER,
            channels INTEGER,
            duration_s DOUBLE,
            bytes BIGINT,
            sha256 VARCHAR,
            bpm DOUBLE,
            musical_key VARCHAR,
            mode VARCHAR,
            lufs DOUBLE,
            peak_dbfs DOUBLE,
            error_code VARCHAR,
            source_key VARCHAR,
            source_etag VARCHAR,
            doc VARCHAR NOT NULL
        )""",
        """CREATE TABLE prompts (
            text VARCHAR PRIMARY KEY,
            used_count BIGINT NOT NULL,
            first_used TIMESTAMP NOT NULL,
            last_used TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE processed_events (
            bucket VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            etag VARCHAR NOT NULL,
            version_id VARCHAR NOT NULL DEFAULT '',
            status VARCHAR NOT NULL,
            track_id VARCHAR,
            error VARCHAR,
            processed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (bucket, key, etag, version_id)
        )""",
    )),
    (2, (
        """CREATE TABLE cursors (
            name VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
    )),
    (3, (
        """CREATE TABLE idempotency_keys (
            key VARCHAR PRIMARY KEY,
            body_sha256 VARCHAR NOT NULL,
            track_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
    )),
    (4, (
        """CREATE TABLE batches (
            id VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            total BIGINT NOT NULL,
            processed BIGINT NOT NULL,
            skipped BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
    )),
    (5, (
        # An accepted invocation (generation, object event, batch) is a row here; runners
        # lease rows (holder + expiry), heartbeat, and finish them (storage.catalogue_jobs).
        """CREATE TABLE jobs (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            parent_id VARCHAR,
            dedupe_key VARCHAR,
            payload VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            outcome VARCHAR,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            lease_holder VARCHAR,
            lease_expires_at TIMESTAMP,
            not_before TIMESTAMP NOT NULL,
            cancel_requested BOOLEAN NOT NULL,
            progress DOUBLE,
            result VARCHAR,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            updated_at TIMESTAMP NOT NULL
        )""",
        "CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key)",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

TRACK_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("kind", pa.string()),
    ("status", pa.string()),
    ("created_at", pa.timestamp("us")),
    ("completed_at", pa.timestamp("us")),
    ("prompt", pa.string()),
    ("engine", pa.string()),
    ("model", pa.string()),
    ("seed", pa.int64()),
    ("audio_key", pa.string()),
    ("format", pa.string()),
    ("sample_rate", pa.int32()),
    ("channels", pa.int32()),
    ("duration_s", pa.float64()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("bpm", pa.float64()),
    ("musical_key", pa.string()),
    ("mode", pa.string()),
    ("lufs", pa.float64()),
    ("peak_dbfs", pa.float64()),
    ("error_code", pa.string()),
    ("source_key", pa.string()),
    ("source_etag", pa.string()),
    ("doc", pa.string()),
])
TRACK_COLUMNS = tuple(TRACK_SCHEMA.names)

# A later write may not move a row back: a duplicate or stale "processing" never overwrites a
# finished row. failed -> completed is allowed (a retried job that then succeeded).
STATUS_RANK = {"pending": 0, "processing": 1, "failed": 2, "canceled": 2, "completed": 3}


def naive_utc(ts: datetime | None) -> datetime | None:
    """``ts`` as a naive UTC datetime (how TIMESTAMP columns store it)."""
    if ts is None:
        return None
    return ts.astimezone(UTC).replace(tzinfo=None)


def aware_utc(ts: datetime | None) -> datetime | None:
    """A naive UTC datetime read back from a TIMESTAMP column, made aware."""
    return None if ts is None else ts.replace(tzinfo=UTC)


def sidecar_row(sc: Sidecar) -> dict[str, Any]:
    """The tracks row of one sidecar (flat, indexed columns + the whole document)."""
    audio, summary = sc.audio, sc.summary
    return {
        "id": sc.id,
        "kind": sc.kind,
        "status": sc.status,
        "created_at": naive_utc(sc.created_at),
        "completed_at": naive_utc(sc.completed_at),
        "prompt": sc.prompt,
        "engine": sc.engine,
        "model": sc.model,
        "seed": sc.seed,
        "audio_key": sc.audio_key,
        "format": audio.format if audio else None,
        "sample_rate": audio.sample_rate if audio else None,
        "channels": audio.channels if audio else None,
        "duration_s": audio.duration_s if audio else None,
        "bytes": audio.bytes if audio else None,
        "sha256": audio.sha256 if audio else None,
        "bpm": summary.bpm,
        "musical_key": summary.key,
        "mode": summary.mode,
        "lufs": summary.lufs,
        "peak_dbfs": summary.peak_dbfs,
        "error_code": sc.error.code if sc.error else None,
        "source_key": sc.source.key if sc.source else None,
        "source_etag": sc.source.etag if sc.source else None,
        "doc": sc.to_json().decode(),
    }


def sidecars_table(sidecars: Sequence[Sidecar]) -> pa.Table:
    """An Arrow batch of rows, deduplicated by id (the highest-ranked status, then last, wins)."""
    latest: dict[str, Sidecar] = {}
    for sc in sidecars:
        prev = latest.get(sc.id)
        if prev is None or STATUS_RANK[sc.status] >= STATUS_RANK[prev.status]:
            latest[sc.id] = sc
    rows = [sidecar_row(sc) for sc in latest.values()]
    return pa.Table.from_pylist(rows, schema=TRACK_SCHEMA)


def rank_sql(column: str) -> str:
    """A SQL expression giving STATUS_RANK of ``column``."""
    whens = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in STATUS_RANK.items())
    return f"(CASE {column} {whens} END)"


# Built only from the constant column names above, never from input.
# New rows only (ids known to be fresh); built from the constant column names, never input.
INSERT_TRACKS_SQL = f"INSERT INTO tracks SELECT {', '.join(TRACK_COLUMNS)} FROM _batch"  # noqa: S608

UPSERT_TRACKS_SQL = (
    f"INSERT INTO tracks SELECT {', '.join(TRACK_COLUMNS)} FROM _batch "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TRACK_COLUMNS if c != "id")
    + f" WHERE {rank_sql('excluded.status')} >= {rank_sql('tracks.status')}"
)
# Every column of existing rows from the registered ``_batch``, in place (no rank check).
UPDATE_TRACKS_SQL = ("UPDATE tracks SET "  # noqa: S608
                     + ", ".join(f"{c} = _batch.{c}" for c in TRACK_COLUMNS if c != "id")
                     + " FROM _batch WHERE tracks.id = _batch.id")
