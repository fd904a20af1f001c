"""The one event handler behind every trigger (webhook, poller, batch, replay).

An event is a hint: the handler HEADs the object and trusts only what the store says. It
skips objects outside the incoming prefix or written by musicfn (the loop guard), claims the
object version (bucket, key, etag, version id) in the catalogue so it is processed once, then
decodes, normalises, analyses and encodes it and stores ``processed/YYYY/MM/DD/<id>.wav`` plus
its sidecar (kind ``upload``, with the source key and etag), and indexes the row.

Bad audio fails at once; transient faults are retried, and an event that still fails is
recorded as failed and written to the dead-letter queue.

Cost: an object up to ``SMALL_OBJECT_BYTES`` is fetched, processed and stored in one Ray task
(``jobs.upload_task``: no audio between processes, S3 work on any worker; concurrent small
uploads share a task); larger ones keep the parallel chain. Claims and final writes of
concurrent events share catalogue transactions (``storage.owner_batch``).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from typing import Any, Literal

from pydantic import BaseModel

from functions.decode import DecodeLimits, decode_audio
from functions.pipeline import ClipOptions
from jobs.job_context import JobContext, JobEnd
from jobs.model import EventPayload, ObjectEvent
from jobs.pipeline import postprocess_clip, write_track
from jobs.upload_task import SMALL_OBJECT_BYTES, UploadBatcher
from musicfn import __version__, metrics
from musicfn.errors import (
    InputError,
    LeaseLostError,
    MusicfnError,
    ObjectNotFoundError,
    original_error,
)
from musicfn.logs import job_context
from musicfn.settings import Settings
from storage.catalogue.client import CatalogueClient
from storage.catalogue.events import ClaimRequest, EventClaim, EventRecord
from storage.dlq import DeadLetter, DeadLetterQueue
from storage.jobs_schema import JobOutcome, JobRecord
from storage.keys import id_timestamp, new_id, utc_now
from storage.objects import ObjectInfo, ObjectStore
from storage.owner_batch import OwnerBatcher
from storage.sidecar import ErrorInfo, Sidecar, SourceRef
from storage.tracks import TrackStore, written_by_musicfn

log = logging.getLogger(__name__)

Outcome = Literal["processed", "duplicate", "rejected", "failed", "removed", "gone"]
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3"})
_RETRY_DELAYS_S = (0.5, 2.0, 5.0)


class EventResult(BaseModel):
    """What handling one event did."""

    outcome: Outcome
    bucket: str
    key: str
    etag: str | None = None
    track_id: str | None = None
    reason: str | None = None
    dead_letter: str | None = None


def reject_reason(event: ObjectEvent, settings: Settings) -> str | None:
    """Why ``event`` is refused without looking at the store (None: look at it)."""
    key = event.key
    if event.bucket != settings.bucket:
        return f"bucket {event.bucket!r} is not musicfn's bucket"
    if len(key.encode()) > 1024 or any(ord(c) < 32 or c == "\x7f" for c in key):
        return "key is too long or has control characters"
    if key.startswith("/") or "\\" in key or posixpath.normpath(key) != key or \
            ".." in key.split("/"):
        return "key is not a plain relative path"
    if not key.startswith(f"{settings.incoming_prefix}/"):
        return f"key is outside the {settings.incoming_prefix}/ prefix"
    return None


def _looks_like_audio(info: ObjectInfo) -> bool:
    suffix = posixpath.splitext(info.key)[1].lower()
    ctype = (info.content_type or "").split(";")[0].strip().lower()
    return suffix in AUDIO_SUFFIXES or ctype.startswith("audio/")


class EventHandler:
    """Processes object events against one bucket and the catalogue owner."""

    def __init__(self, objects: ObjectStore, catalogue: CatalogueClient, settings: Settings,
                 options: ClipOptions | None = None) -> None:
        self.objects = objects
        self.tracks = TrackStore(objects, settings)
        self.dlq = DeadLetterQueue(objects, settings)
        self.catalogue = catalogue
        self.owner = OwnerBatcher(catalogue)  # claims and completions, coalesced
        self.settings = settings
        self.options = options or ClipOptions()
        self.uploads = UploadBatcher(settings, self.options)

    async def handle(self, event: ObjectEvent, *, letter: DeadLetter | None = None,
                     claimant: str | None = None, ctx: JobContext | None = None) -> EventResult:
        """Handle one event; with ``letter`` it is a replay of that dead letter.

        ``claimant`` (the job id) becomes the track id of a new claim; a claim already held
        under it is this job's own from an earlier attempt, and is taken over at once.
        ``ctx`` (the job's) fences the track's writes: ``LeaseLostError`` once the job's
        lease is no longer sure, so only the holder writes.

        Never raises for a bad object; raises MusicfnError only when the event could not be
        recorded at all (store or catalogue down after retries): the caller redelivers.
        """
        reason = reject_reason(event, self.settings)
        if reason is not None:
            return self._done(event, "rejected", reason=reason)
        if event.kind == "removed":
            return await self._removed(event)
        try:
            info = await asyncio.to_thread(self.objects.head, event.key)
        except ObjectNotFoundError:
            return self._done(event, "gone", reason="object no longer exists")
        if written_by_musicfn(info.metadata):
            return self._done(event, "rejected", reason="written by musicfn (loop guard)")
        version = event.version_id
        if not _looks_like_audio(info):
            await self._record(info, version, "rejected", None, "not an audio file")
            return self._done(event, "rejected", etag=info.etag, reason="not an audio file")
        claim: EventClaim = await self.owner.claim(ClaimRequest(
            bucket=self.settings.bucket, key=info.key, etag=info.etag, version_id=version,
            track_id=claimant or new_id(), stale_after_s=self.settings.event_claim_timeout_s,
            retry_failed=letter is not None))
        if not claim.claimed:
            return self._done(event, "duplicate", etag=info.etag,
                              track_id=claim.record.track_id, reason=claim.record.status)
        track_id = claim.record.track_id or new_id()
        with job_context(track_id):
            return await self._process(event, info, track_id, letter, ctx)

    async def _process(self, event: ObjectEvent, info: ObjectInfo, track_id: str,
                       letter: DeadLetter | None, ctx: JobContext | None) -> EventResult:
        attempts = 0
        while True:
            attempts += 1
            try:
                stored = await self._store(info, event.version_id, track_id, ctx)
                started = time.perf_counter()
                await self._record(info, event.version_id, "processed", track_id, None,
                                   track=stored)
                metrics.record_stage("index", time.perf_counter() - started)
                return self._done(event, "processed", etag=info.etag, track_id=track_id)
            except LeaseLostError:
                raise  # not this event's fault: the job's next holder processes it
            except Exception as exc:  # decided below: permanent, retried, or dead-lettered
                error = _error_info(exc)
                permanent = isinstance(original_error(exc), InputError)
                if permanent or attempts >= self.settings.event_attempts:
                    return await self._dead_letter(event, info, track_id, error, attempts,
                                                   letter)
                delay = _RETRY_DELAYS_S[min(attempts, len(_RETRY_DELAYS_S)) - 1]
                log.warning("event %s failed (%s), retry in %.1f s", info.key, error.message,
                            delay)
                await asyncio.sleep(delay)

    async def _store(self, info: ObjectInfo, version: str, track_id: str,
                     ctx: JobContext | None) -> Sidecar:
        """The object as a stored track (audio, then sidecar), not indexed yet."""
        job = Sidecar(id=track_id, kind="upload", status="pending",
                      created_at=id_timestamp(track_id),
                      request={"filename": posixpath.basename(info.key),
                               "output": self.options.model_dump(mode="json")},
                      versions={"musicfn": __version__},
                      source=SourceRef(bucket=self.settings.bucket, key=info.key,
                                       etag=info.etag, version_id=version or None))
        if ctx is not None:
            await ctx.ensure_lease()
        if info.size <= SMALL_OBJECT_BYTES:  # with concurrent ones, in one Ray task
            return await self.uploads.store(
                info.key, job, deadline=ctx.write_deadline() if ctx is not None else None)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        data = await asyncio.to_thread(self.objects.get, info.key)
        timings["download"] = time.perf_counter() - started
        decoded = await asyncio.to_thread(decode_audio, data,
                                          DecodeLimits.from_settings(self.settings))
        clip = await postprocess_clip(decoded.audio, decoded.sample_rate, self.options,
                                      timings)
        return await write_track(self.tracks, job, None, clip, self.settings.processed_prefix,
                                 self.options, timings,
                                 fence=ctx.check_lease if ctx is not None else None)

    async def _record(self, info: ObjectInfo, version: str, status: Any,
                      track_id: str | None, error: str | None, *,
                      track: Sidecar | None = None) -> None:
        """The event's record (with ``track``'s row, in the same transaction)."""
        await self.owner.complete(track, EventRecord(
            bucket=self.settings.bucket, key=info.key, etag=info.etag, version_id=version,
            status=status, track_id=track_id, error=error, processed_at=utc_now()))

    async def _dead_letter(self, event: ObjectEvent, info: ObjectInfo, track_id: str,
                           error: ErrorInfo, attempts: int,
                           letter: DeadLetter | None) -> EventResult:
        """Record the failure durably: the event record, then the letter (a replay updates
        its own letter instead of writing a second one)."""
        if letter is not None:
            new = letter.model_copy(update={
                "etag": info.etag, "error": error, "attempts": letter.attempts + attempts,
                "last_failed_at": utc_now(), "replays": letter.replays + 1})
        else:
            new = DeadLetter.new(bucket=self.settings.bucket, key=info.key, etag=info.etag,
                                 version_id=event.version_id, source=event.source,
                                 error=error, attempts=attempts)
        letter_key = await asyncio.to_thread(self.dlq.put, new)
        await self._record(info, event.version_id, "failed", track_id,
                           f"{error.code}: {error.message}")
        metrics.record_event("dlq", event.source)
        log.warning("event %s failed for good (%s): dead letter %s", info.key, error.code,
                    letter_key)
        return self._done(event, "failed", etag=info.etag, track_id=track_id,
                          reason=f"{error.code}: {error.message}", dead_letter=new.id)

    async def _removed(self, event: ObjectEvent) -> EventResult:
        """The source of processed tracks was deleted: mark them, or delete them."""
        if await asyncio.to_thread(self.objects.exists, event.key):
            return self._done(event, "duplicate", reason="object exists again (stale event)")
        tracks: list[Sidecar] = await self.catalogue.tracks_by_source(event.key)
        for track in tracks:
            if track.source is None or track.source.removed_at is not None:
                continue
            key = self.tracks.key_for(track)
            if self.settings.source_removed == "delete":
                await asyncio.to_thread(self.tracks.delete, key)
                await self.catalogue.delete([track.id])
                continue
            marked = track.model_copy(update={
                "source": track.source.model_copy(update={"removed_at": utc_now()})})
            await asyncio.to_thread(self.tracks.rewrite_sidecar, marked)
            await self.catalogue.upsert([marked])
        return self._done(event, "removed", reason=f"{len(tracks)} track(s) from this source")

    def _done(self, event: ObjectEvent, outcome: Outcome, **fields: Any) -> EventResult:
        metrics.record_event(outcome, event.source)
        if outcome == "rejected":
            log.info("event for %s/%s rejected: %s", event.bucket, event.key,
                     fields.get("reason"))
        return EventResult(outcome=outcome, bucket=event.bucket, key=event.key,
                           **{"etag": event.etag, **fields})


def _error_info(exc: BaseException) -> ErrorInfo:
    original = original_error(exc)
    if isinstance(original, MusicfnError):
        return ErrorInfo(code=original.code, message=original.message, stage="event")
    log.error("unexpected error handling an event", exc_info=original)
    return ErrorInfo(code="internal_error", message=f"{type(original).__name__} while "
                     "processing the object", stage="event")


class UploadWork:
    """Event jobs: one object-store event through the handler (``jobs.runner.Work``)."""

    def __init__(self, handler: EventHandler) -> None:
        self.handler = handler

    async def run(self, job: JobRecord, ctx: JobContext) -> JobEnd:
        """Handle the event; its outcome (processed, duplicate, failed, ...) is the result.
        Raises only when the event could not even be recorded (the runner retries)."""
        payload = EventPayload.model_validate(job.payload)
        letter = None
        if payload.letter_id is not None:
            letter = await asyncio.to_thread(self.handler.dlq.get, payload.letter_id)
        result = await self.handler.handle(payload.event, letter=letter, claimant=job.id,
                                           ctx=ctx)
        if letter is not None and result.outcome != "failed":
            await asyncio.to_thread(self.handler.dlq.delete, letter.id)
        return JobEnd("completed", result=result.model_dump(mode="json"))

    async def discard(self, job: JobRecord) -> None:
        """Nothing to discard: a processed upload is kept even if its job was canceled."""

    async def exhausted(self, job: JobRecord) -> JobEnd:
        """Out of attempts: the event goes to the dead-letter queue."""
        event = EventPayload.model_validate(job.payload).event
        error = ErrorInfo(code="interrupted", stage="event",
                          message=f"processing was interrupted {job.attempts - 1} times")
        letter = DeadLetter.new(bucket=event.bucket, key=event.key, etag=event.etag or "",
                                version_id=event.version_id, source=event.source, error=error,
                                attempts=job.attempts - 1, job_id=job.id)
        await asyncio.to_thread(self.handler.dlq.put, letter)
        return JobEnd("failed", error=error, result={"outcome": "failed",
                                                     "dead_letter": letter.id})

    async def ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        """No callbacks for events."""
