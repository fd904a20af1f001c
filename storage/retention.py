"""Walking the whole bucket, and retention: remove old tracks and orphan audio.

``scan_bucket`` lists the track prefixes in key order and pairs audio with sidecars (both
halves of a track are neighbours); the cleanups delete sidecar first, then audio, then row, so
a crash part-way leaves orphan audio (reported, removed later), never a dangling track.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field

from musicfn.errors import InvalidKeyError
from musicfn.settings import Settings
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.keys import TrackKey, day_prefix, id_timestamp, parse_key, utc_now
from storage.objects import ObjectInfo, ObjectStore


class BucketScan(BaseModel):
    """What the track prefixes of the bucket hold, grouped by track id."""

    tracks: dict[str, TrackKey] = Field(default_factory=dict)  # audio + sidecar present
    orphan_audio: list[ObjectInfo] = Field(default_factory=list)  # audio, no sidecar
    dangling_sidecars: list[str] = Field(default_factory=list)  # sidecar, no audio
    invalid_keys: list[str] = Field(default_factory=list)


class CleanupReport(BaseModel):
    dry_run: bool
    tracks: list[str] = Field(default_factory=list)  # ids removed (or that would be)
    objects: list[str] = Field(default_factory=list)
    rows: int = 0


class RetentionTarget(Protocol):
    """What cleanup needs of a catalogue: ``Catalogue``, or its owner's client."""

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage: ...
    def delete(self, track_ids: Iterable[str]) -> int: ...


def _list_until(objects: ObjectStore, prefix: str, before: date | None) -> Iterator[ObjectInfo]:
    stop = day_prefix(prefix, before) if before else None
    for info in objects.list(f"{prefix}/"):
        if stop is not None and info.key >= stop:
            return
        yield info


def scan_bucket(objects: ObjectStore, settings: Settings, *, before: date | None = None,
                on_sidecar: Callable[[TrackKey], None] | None = None,
                on_track: Callable[[TrackKey], None] | None = None) -> BucketScan:
    """Group every object under the track prefixes (optionally only days before ``before``).

    ``on_sidecar`` is called as each sidecar is listed, ``on_track`` as soon as both halves of
    a track have been listed (they are neighbours in key order), so callers can work while
    the listing goes on.
    """
    scan = BucketScan()
    audio: dict[str, tuple[TrackKey, ObjectInfo]] = {}
    sidecars: dict[str, str] = {}
    for prefix in settings.track_prefixes:
        for info in _list_until(objects, prefix, before):
            try:
                key, ext = parse_key(info.key, settings.track_prefixes)
            except InvalidKeyError:
                scan.invalid_keys.append(info.key)
                continue
            if ext == "json":
                sidecars[key.id] = info.key
                if on_sidecar is not None:
                    on_sidecar(key)
            else:
                audio[key.id] = (key, info)
            if key.id in audio and key.id in sidecars:
                track_key = audio[key.id][0]
                scan.tracks[key.id] = track_key
                if on_track is not None:
                    on_track(track_key)
    scan.orphan_audio = [info for i, (_, info) in audio.items() if i not in sidecars]
    scan.dangling_sidecars = sorted(k for i, k in sidecars.items() if i not in audio)
    return scan


def cleanup_older_than(objects: ObjectStore, catalogue: RetentionTarget, settings: Settings,
                       older_than: timedelta, *, dry_run: bool = False,
                       now: datetime | None = None) -> CleanupReport:
    """Remove tracks (sidecar, then audio, then row) created before ``now - older_than``.

    Catalogue rows with no track in the bucket (failed or abandoned jobs) older than the
    cutoff are removed too.
    """
    cutoff = (now or utc_now()) - older_than
    scan = scan_bucket(objects, settings, before=cutoff.date() + timedelta(days=1))
    old = {i: k for i, k in scan.tracks.items() if id_timestamp(i) < cutoff}
    report = CleanupReport(dry_run=dry_run, tracks=sorted(old))
    report.objects = [k.sidecar_key for k in old.values()] + [k.audio_key for k in old.values()]
    stale_rows: list[str] = []
    query = TrackQuery(created_to=cutoff, limit=10_000)
    while True:
        page = catalogue.list_tracks(query)
        stale_rows += [sc.id for sc in page.items]
        if page.next_cursor is None:
            break
        query = query.model_copy(update={"cursor": page.next_cursor})
    if dry_run:
        report.rows = len(stale_rows)
        return report
    # Sidecars first: a crash part-way leaves orphan audio (reported), never a dangling track.
    objects.delete_many([k.sidecar_key for k in old.values()])
    objects.delete_many([k.audio_key for k in old.values()])
    report.rows = catalogue.delete(stale_rows)
    return report


def cleanup_orphans(objects: ObjectStore, settings: Settings, *, grace: timedelta,
                    dry_run: bool = False, now: datetime | None = None) -> list[str]:
    """Delete audio objects that never got a sidecar and are older than ``grace``.

    The grace period keeps this from racing a write in flight (audio stored, sidecar next).
    """
    limit = (now or utc_now()) - grace
    orphans = [o.key for o in scan_bucket(objects, settings).orphan_audio
               if o.last_modified < limit]
    if not dry_run:
        objects.delete_many(orphans)
    return orphans
