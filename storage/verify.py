"""Compare the bucket (the source of truth) with the catalogue: ``musicfn verify``.

Bucket side, every track under the track prefixes is an audio object plus its sidecar:

    orphan_audio        audio without a sidecar (a write that never committed)
    dangling_sidecar    a sidecar whose audio is missing
    invalid_sidecar     a sidecar that cannot be read
    invalid_key         an object under a track prefix outside the key layout
    audio_mismatch      audio whose key, size, ETag (or, with ``deep``, sha256) differs from
                        its sidecar's audio facts

Catalogue side:

    missing_row         a committed track with no catalogue row
    row_mismatch        a row that differs from its track's sidecar (status or fields)
    row_without_objects a completed row whose track is not committed in the bucket
    duplicate_row       one id listed twice
    stranded_job        a job no runner holds: its lease expired longer ago than the lease
                        time plus one sweep, or it waits while no runner works at all

Pending, processing and failed rows have no objects and are not problems. Problems whose
newest timestamp (track id, object, completion) is within ``grace`` are reported apart as
``recent``: on a running service they may be writes in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from musicfn.errors import InputError, InvalidKeyError, MusicfnError
from musicfn.settings import Settings
from storage.catalogue.queries import TrackPage, TrackQuery
from storage.keys import TrackKey, id_timestamp, parse_key, utc_now
from storage.objects import ObjectInfo, ObjectStore
from storage.sidecar import Sidecar

ProblemKind = Literal[
    "orphan_audio", "dangling_sidecar", "invalid_sidecar", "invalid_key", "audio_mismatch",
    "missing_row", "row_mismatch", "row_without_objects", "duplicate_row", "stranded_job",
]
_PAGE = 10_000


class CatalogueReader(Protocol):
    """What verify needs of a catalogue: ``Catalogue`` itself, or a client of its owner."""

    def list_tracks(self, query: TrackQuery | None = None) -> TrackPage:
        """A page of tracks, newest first, with the next page's cursor."""
        ...


class Problem(BaseModel):
    """One disagreement between the bucket and the catalogue (or inside the bucket)."""

    kind: ProblemKind
    id: str | None = None
    key: str | None = None
    detail: str


class VerifyReport(BaseModel):
    """The outcome of one verification; ``ok`` when ``problems`` is empty."""

    tracks: int  # committed tracks (audio + sidecar) in the bucket
    rows: int  # catalogue rows, any status
    completed_rows: int
    deep: bool
    grace_s: float
    problems: list[Problem] = Field(default_factory=list)
    recent: list[Problem] = Field(default_factory=list)  # within the grace period
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems by kind."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out


def catalogue_rows(reader: CatalogueReader) -> tuple[dict[str, Sidecar], list[str]]:
    """Every row by id, following cursors; and the ids listed more than once."""
    rows: dict[str, Sidecar] = {}
    duplicates: list[str] = []
    query = TrackQuery(limit=_PAGE)
    while True:
        page = reader.list_tracks(query)
        for sc in page.items:
            if sc.id in rows:
                duplicates.append(sc.id)
            rows[sc.id] = sc
        if page.next_cursor is None:
            return rows, duplicates
        query = query.model_copy(update={"cursor": page.next_cursor})


def _differences(row: Sidecar, sidecar: Sidecar) -> list[str]:
    a, b = row.model_dump(mode="json"), sidecar.model_dump(mode="json")
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class _Checker:
    """Collects problems, splitting off the recent ones."""

    def __init__(self, cutoff: datetime) -> None:
        self.cutoff = cutoff
        self.problems: list[Problem] = []
        self.recent: list[Problem] = []

    def add(self, kind: ProblemKind, detail: str, *, track_id: str | None = None,
            key: str | None = None, when: list[datetime | None] | None = None) -> None:
        times = [t for t in (when or []) if t is not None]
        if track_id is not None:
            with contextlib.suppress(InvalidKeyError):
                times.append(id_timestamp(track_id))
        problem = Problem(kind=kind, id=track_id, key=key, detail=detail)
        recent = bool(times) and max(times) >= self.cutoff
        (self.recent if recent else self.problems).append(problem)


def _sidecars(objects: ObjectStore, tracks: dict[str, TrackKey],
              workers: int) -> Iterator[tuple[TrackKey, Sidecar | MusicfnError]]:
    keys = list(tracks.values())
    for key, body in zip(keys, objects.get_many([k.sidecar_key for k in keys],
                                                workers=workers), strict=True):
        if isinstance(body, MusicfnError):
            yield key, body
            continue
        try:
            yield key, Sidecar.from_json(body)
        except InputError as exc:
            yield key, exc


def _check_audio(check: _Checker, key: TrackKey, sc: Sidecar, info: ObjectInfo,
                 objects: ObjectStore, deep: bool) -> None:
    facts = sc.audio
    issues: list[str] = []
    if sc.id != key.id:
        issues.append(f"sidecar id {sc.id}")
    if sc.audio_key != key.audio_key:
        issues.append(f"sidecar audio_key {sc.audio_key}")
    if facts is None:
        issues.append("sidecar has no audio facts")
    else:
        if info.size != facts.bytes:
            issues.append(f"size {info.size} != sidecar {facts.bytes}")
        if facts.etag and info.etag and info.etag != facts.etag:
            issues.append(f"ETag {info.etag} != sidecar {facts.etag}")
        if deep and not issues:
            body = objects.fetch(key.audio_key)
            if isinstance(body, MusicfnError):
                issues.append(f"audio unreadable: {body.code}")
            elif hashlib.sha256(body).hexdigest() != facts.sha256:
                issues.append("sha256 differs from the sidecar")
    if issues:
        check.add("audio_mismatch", "; ".join(issues), track_id=key.id, key=key.audio_key,
                  when=[info.last_modified])


class _Listing(BaseModel):
    """One pass over the track prefixes: objects grouped by track id."""

    audio: dict[str, tuple[TrackKey, ObjectInfo]] = Field(default_factory=dict)
    sidecars: dict[str, ObjectInfo] = Field(default_factory=dict)
    invalid: list[ObjectInfo] = Field(default_factory=list)

    @classmethod
    def of(cls, objects: ObjectStore, settings: Settings) -> _Listing:
        listing = cls()
        for prefix in settings.track_prefixes:
            for info in objects.list(f"{prefix}/"):
                try:
                    key, ext = parse_key(info.key, settings.track_prefixes)
                except InvalidKeyError:
                    listing.invalid.append(info)
                    continue
                if ext == "json":
                    listing.sidecars[key.id] = info
                else:
                    listing.audio[key.id] = (key, info)
        return listing


def verify(objects: ObjectStore, catalogue: CatalogueReader, settings: Settings, *,
           deep: bool = False, grace: timedelta = timedelta(0), now: datetime | None = None,
           workers: int = 8) -> VerifyReport:
    """Compare every track in the bucket with the catalogue; see the module docstring.

    ``deep`` also downloads every audio object and checks its sha256 against the sidecar.
    Problems newer than ``grace`` go to ``recent`` instead of ``problems``.
    """
    started = time.perf_counter()
    check = _Checker((now or utc_now()) - grace)
    listing = _Listing.of(objects, settings)
    tracks = {i: key for i, (key, _) in listing.audio.items() if i in listing.sidecars}
    for track_id, (_, info) in listing.audio.items():
        if track_id not in listing.sidecars:
            check.add("orphan_audio", "audio without a sidecar (never committed)",
                      track_id=track_id, key=info.key, when=[info.last_modified])
    for track_id, info in listing.sidecars.items():
        if track_id not in listing.audio:
            check.add("dangling_sidecar", "sidecar whose audio is missing", track_id=track_id,
                      key=info.key, when=[info.last_modified])
    for info in listing.invalid:
        check.add("invalid_key", "object outside the key layout", key=info.key,
                  when=[info.last_modified])

    rows, duplicates = catalogue_rows(catalogue)
    for track_id in duplicates:
        check.add("duplicate_row", "id listed more than once", track_id=track_id)
    committed: set[str] = set()
    for key, sc in _sidecars(objects, tracks, workers):
        if isinstance(sc, MusicfnError):
            check.add("invalid_sidecar", f"unreadable sidecar: {sc.message}", track_id=key.id,
                      key=key.sidecar_key)
            continue
        committed.add(key.id)
        _check_audio(check, key, sc, listing.audio[key.id][1], objects, deep)
        row = rows.get(key.id)
        if row is None:
            check.add("missing_row", "committed track with no catalogue row", track_id=key.id,
                      key=key.sidecar_key, when=[sc.completed_at])
        elif row != sc:
            detail = (f"row status {row.status}, sidecar {sc.status}" if row.status != sc.status
                      else f"row differs from the sidecar in: {', '.join(_differences(row, sc))}")
            check.add("row_mismatch", detail, track_id=key.id, key=key.sidecar_key,
                      when=[sc.completed_at, row.completed_at])
    for track_id, row in rows.items():
        if row.status == "completed" and track_id not in committed:
            check.add("row_without_objects", "completed row, but its track is not committed "
                      "in the bucket", track_id=track_id, key=row.audio_key,
                      when=[row.completed_at])
    stale_jobs = getattr(catalogue, "stale_jobs", None)  # a catalogue with a job queue
    if stale_jobs is not None:
        for job in stale_jobs(settings.job_lease_s + settings.job_poll_interval_s):
            check.add("stranded_job", f"{job.kind} job {job.state} after {job.attempts} "
                      "attempt(s) and no runner holds it", track_id=job.id,
                      when=[job.updated_at])
    return VerifyReport(
        tracks=len(tracks), rows=len(rows),
        completed_rows=sum(1 for r in rows.values() if r.status == "completed"),
        deep=deep, grace_s=grace.total_seconds(), problems=check.problems,
        recent=check.recent, seconds=time.perf_counter() - started)
