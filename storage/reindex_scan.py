"""The parallel parts of reindex: partitions of the bucket, and the work done per partition.

The track layout ``<prefix>/YYYY/MM/DD/<id>.<ext>`` puts both halves of a track in the same day
folder, so each day is an independent partition: list it, pair audio with sidecars, read the
sidecars and turn them into catalogue rows (``storage.catalogue.schema.sidecars_table``, the
one mapping the online path uses). ``scan_partition`` and ``read_sidecars`` are plain
functions with picklable arguments and results: ``storage.reindex`` runs them as Ray tasks
or on threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from musicfn.errors import InputError, InvalidKeyError, MusicfnError, ObjectNotFoundError
from storage.catalogue.events import EventRecord
from storage.catalogue.schema import sidecars_table
from storage.keys import parse_key
from storage.s3_bulk import BulkS3, S3Target
from storage.sidecar import Sidecar

_DATE_DEPTH = 3  # YYYY/MM/DD below a track prefix
_CLIENTS: dict[S3Target, BulkS3] = {}  # per process: connections outlive one task


def client(target: S3Target) -> BulkS3:
    """This process's client for ``target`` (its idle connections are reused across tasks)."""
    found = _CLIENTS.get(target)
    if found is None:
        found = _CLIENTS.setdefault(target, BulkS3(target))
    return found


@dataclass
class SidecarRows:
    """Catalogue rows read from a set of sidecars."""

    table: pa.Table | None = None
    events: list[EventRecord] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # unreadable sidecar keys
    gone: int = 0  # deleted since they were listed

    @property
    def rows(self) -> int:
        return 0 if self.table is None else int(self.table.num_rows)


@dataclass
class PartitionScan:
    """What one partition (a day folder, usually) holds."""

    prefix: str
    tracks: dict[str, str] = field(default_factory=dict)  # id -> sidecar key, audio present
    orphan_audio: list[str] = field(default_factory=list)  # audio, no sidecar
    dangling_sidecars: list[str] = field(default_factory=list)  # sidecar, no audio
    invalid_keys: list[str] = field(default_factory=list)
    read: SidecarRows | None = None  # the rows, when the partition was small enough


def partitions(target: S3Target, prefixes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(partition prefixes, stray keys) of the track prefixes.

    Walks ``prefix/``, ``prefix/YYYY/`` and ``prefix/YYYY/MM/`` with delimiter listings (a
    few requests per month of data); each day folder is a partition. Keys found above day
    level are returned as strays (the caller classifies them: they are invalid keys).
    """
    s3 = client(target)
    level = [f"{p}/" for p in prefixes]
    strays: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(_DATE_DEPTH):
            nxt: list[str] = []
            for keys, dirs in pool.map(s3.list_dirs, level):
                strays += keys
                nxt += dirs
            level = nxt
    return sorted(level), strays


def classify(keys: list[str], allowed: tuple[str, ...], prefix: str = "") -> PartitionScan:
    """Pair audio with sidecars among ``keys`` (one partition's listing)."""
    scan = PartitionScan(prefix=prefix)
    audio: dict[str, str] = {}
    sidecars: dict[str, str] = {}
    for key in keys:
        try:
            track, ext = parse_key(key, allowed)
        except InvalidKeyError:
            scan.invalid_keys.append(key)
            continue
        (sidecars if ext == "json" else audio)[track.id] = key
    scan.tracks = {i: k for i, k in sidecars.items() if i in audio}
    scan.orphan_audio = [k for i, k in audio.items() if i not in sidecars]
    scan.dangling_sidecars = [k for i, k in sidecars.items() if i not in audio]
    return scan


def scan_partition(target: S3Target, prefix: str, allowed: tuple[str, ...],
                   read_limit: int, threads: int) -> PartitionScan:
    """List ``prefix`` and classify its keys; with at most ``read_limit`` tracks, read their
    sidecars too (one task instead of two for the usual small day)."""
    scan = classify(client(target).list_keys(prefix), allowed, prefix)
    if len(scan.tracks) <= read_limit:
        scan.read = read_sidecars(target, list(scan.tracks.values()), threads)
    return scan


def read_sidecars(target: S3Target, keys: list[str], threads: int) -> SidecarRows:
    """Fetch and parse the sidecars at ``keys`` into rows (``threads`` GETs in flight).

    A sidecar deleted since the listing is skipped; an unreadable one is reported; any other
    storage failure raises (reindex stops rather than miss rows).
    """
    s3 = client(target)
    out = SidecarRows()
    parsed: list[Sidecar] = []
    if threads > 1 and len(keys) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(keys))) as pool:
            bodies = list(pool.map(s3.get, keys))
    else:
        bodies = [s3.get(k) for k in keys]
    for key, body in zip(keys, bodies, strict=True):
        if isinstance(body, ObjectNotFoundError):
            out.gone += 1
            continue
        if isinstance(body, MusicfnError):
            raise body
        try:
            parsed.append(Sidecar.from_json(body))
        except InputError:
            out.invalid.append(key)
    if parsed:
        out.table = sidecars_table(parsed)
        out.events = source_events(parsed)
    return out


def source_events(sidecars: list[Sidecar]) -> list[EventRecord]:
    """Event records implied by processed uploads: a rebuilt catalogue must not process their
    sources again."""
    return [EventRecord(bucket=sc.source.bucket, key=sc.source.key, etag=sc.source.etag,
                        version_id=sc.source.version_id or "", status="processed",
                        track_id=sc.id, processed_at=sc.completed_at or sc.created_at)
            for sc in sidecars if sc.source is not None and sc.status == "completed"]
