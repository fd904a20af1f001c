"""Rebuild the catalogue from the bucket.

The bucket is the source of truth: ``reindex`` reads every sidecar under the track prefixes and
upserts the same rows the online path writes (``storage.catalogue.schema.sidecars_table``).

It is embarrassingly parallel by day: both halves of a track live in one day folder
(``<prefix>/YYYY/MM/DD/``), so each day is listed, paired and read by its own task
(``storage.reindex_scan``) - Ray tasks when this process is connected to Ray, threads
otherwise (``storage.parallel``) - and the rows come back as Arrow tables for one bulk upsert.
Large days are read in chunks of ``READ_CHUNK`` sidecars, each its own task.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

import pyarrow as pa
from pydantic import BaseModel

from musicfn.settings import Settings
from storage.catalogue.events import EventRecord
from storage.objects import ObjectStore
from storage.parallel import Parallelism, task_runner
from storage.reindex_scan import (
    PartitionScan,
    SidecarRows,
    classify,
    partitions,
    read_sidecars,
    scan_partition,
    source_events,
)
from storage.retention import (
    BucketScan,
    CleanupReport,
    cleanup_older_than,
    cleanup_orphans,
    scan_bucket,
)
from storage.s3_bulk import S3Target

__all__ = ["BucketScan", "CleanupReport", "ReindexReport", "cleanup_older_than",
           "cleanup_orphans", "reindex", "scan_bucket", "source_events"]

READ_CHUNK = 250  # sidecars per read task (a day with no more is listed and read by one task)


class ReindexReport(BaseModel):
    sidecars: int
    upserted: int
    pruned: int
    invalid_sidecars: list[str]
    orphan_audio: list[str]
    dangling_sidecars: list[str]
    invalid_keys: list[str]
    seconds: float
    parallel: str = "threads"  # how it ran: "ray" tasks or local "threads"
    partitions: int = 0  # day folders listed

    @property
    def rate_per_s(self) -> float:
        return self.sidecars / self.seconds if self.seconds > 0 else 0.0


class ReindexTarget(Protocol):
    """What reindex writes to: ``Catalogue``, or a client of its owner (the CLI while the
    service runs)."""

    def upsert_table(self, table: pa.Table) -> int: ...
    def record_events(self, events: Iterable[EventRecord]) -> int: ...
    def rebuild_prompts(self) -> None: ...
    def prune_completed(self, keep_ids: set[str]) -> int: ...
    def checkpoint(self) -> None: ...


def reindex(objects: ObjectStore, catalogue: ReindexTarget, settings: Settings, *,
            workers: int = 8, batch_size: int = 50_000, prune: bool = True,
            parallel: Parallelism = "auto") -> ReindexReport:
    """Upsert a row for every track's sidecar in the bucket; recompute prompt usage.

    Runs as Ray tasks when this process is connected to Ray (``parallel="auto"``: the
    service's catalogue owner, or any driver after ``ray.init``), each with ``workers`` GETs in
    flight; else on ``workers`` threads here (the CLI, service stopped: see
    ``storage.parallel``). Rows are upserted ``batch_size`` at a time. With ``prune``,
    completed rows whose track is no longer in the bucket are deleted. Unreadable sidecars
    are reported, not fatal; a storage failure stops it (nothing is pruned then).
    """
    started = time.perf_counter()
    target = S3Target.from_settings(objects.settings, objects.bucket)
    allowed = settings.track_prefixes
    tasks = task_runner(parallel, workers)
    threads = workers if tasks.name == "ray" else 1  # GETs in flight per task
    parts, strays = partitions(target, allowed)
    found = classify(strays, allowed)
    tracks: dict[str, str] = {}
    invalid: list[str] = []
    buffer: list[SidecarRows] = []
    upserted = 0

    def flush() -> None:
        nonlocal upserted
        tables = [r.table for r in buffer if r.table is not None]
        events = [e for r in buffer for e in r.events]
        buffer.clear()
        if tables:
            upserted += catalogue.upsert_table(_unique_ids(pa.concat_tables(tables)))
        catalogue.record_events(events)

    def add(rows: SidecarRows) -> None:
        invalid.extend(rows.invalid)
        buffer.append(rows)
        if sum(r.rows for r in buffer) >= batch_size:
            flush()

    pending = [tasks.submit(scan_partition, target, p, allowed, READ_CHUNK, threads)
               for p in parts]
    try:
        while pending:
            done, pending = tasks.wait(pending)
            for result in done:
                if isinstance(result, SidecarRows):
                    add(result)
                    continue
                _merge(found, result)
                tracks.update(result.tracks)
                if result.read is not None:
                    add(result.read)
                    continue
                keys = sorted(result.tracks.values())
                pending += [tasks.submit(read_sidecars, target, keys[i : i + READ_CHUNK],
                                         threads) for i in range(0, len(keys), READ_CHUNK)]
        flush()
    finally:
        tasks.close(pending)
    catalogue.rebuild_prompts()
    pruned = catalogue.prune_completed(set(tracks)) if prune else 0
    catalogue.checkpoint()
    return ReindexReport(
        sidecars=len(tracks), upserted=upserted, pruned=pruned, invalid_sidecars=sorted(invalid),
        orphan_audio=sorted(found.orphan_audio), dangling_sidecars=sorted(found.dangling_sidecars),
        invalid_keys=sorted(found.invalid_keys), seconds=time.perf_counter() - started,
        parallel=tasks.name, partitions=len(parts))


def _merge(into: PartitionScan, scan: PartitionScan) -> None:
    into.orphan_audio += scan.orphan_audio
    into.dangling_sidecars += scan.dangling_sidecars
    into.invalid_keys += scan.invalid_keys


def _unique_ids(table: pa.Table) -> pa.Table:
    """``table`` with one row per id (the last): a track id under two prefixes is one row."""
    ids = table.column("id").to_pylist()
    if len(set(ids)) == len(ids):
        return table
    last = {track_id: i for i, track_id in enumerate(ids)}
    return table.take(sorted(last.values()))
