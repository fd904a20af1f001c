"""The dead-letter queue: events that still failed after their retries, kept in the bucket.

A letter is ``dlq/YYYY/MM/DD/<letter-id>.json`` (dated by its id, like tracks), written with
musicfn's writer marker so no trigger ever processes it. ``musicfn events replay`` re-drives
letters through the event handler and removes the ones that then succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from musicfn.errors import InvalidRequestError, NotFoundError, ObjectNotFoundError
from musicfn.settings import Settings
from musicfn.validation import validation_message
from storage.keys import day_prefix, id_timestamp, new_id, utc_now, validate_id
from storage.objects import ObjectStore
from storage.sidecar import ErrorInfo
from storage.tracks import WRITER_METADATA_KEY, WRITER_METADATA_VALUE


class DeadLetter(BaseModel):
    """One failed job or event: what it was about, what went wrong, how often it was tried.

    ``job_kind`` says which: ``event`` letters name the object (bucket, key, etag) and are
    replayed through the upload handler; ``generation`` letters name the job (``job_id``,
    the track id) that ran out of attempts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    bucket: str
    key: str
    etag: str
    version_id: str = ""
    source: str
    job_kind: Literal["event", "generation", "batch"] = "event"
    job_id: str | None = None
    error: ErrorInfo
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replays: int = 0

    @classmethod
    def new(cls, *, bucket: str, key: str, etag: str, version_id: str, source: str,
            error: ErrorInfo, attempts: int, job_kind: Literal["event", "generation",
                                                               "batch"] = "event",
            job_id: str | None = None) -> DeadLetter:
        """A fresh letter with a new id, failed now."""
        now = utc_now()
        return cls(id=new_id(), bucket=bucket, key=key, etag=etag, version_id=version_id,
                   source=source, job_kind=job_kind, job_id=job_id, error=error,
                   attempts=attempts, first_failed_at=now, last_failed_at=now)


class DeadLetterQueue:
    """Dead letters under the configured dlq prefix of one bucket."""

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self.objects = objects
        self.prefix = settings.dlq_prefix

    def key_of(self, letter_id: str) -> str:
        """Where the letter ``letter_id`` is stored (its id carries its date)."""
        validate_id(letter_id)
        return f"{day_prefix(self.prefix, id_timestamp(letter_id).date())}{letter_id}.json"

    def put(self, letter: DeadLetter) -> str:
        """Store (or overwrite) a letter; returns its key."""
        key = self.key_of(letter.id)
        self.objects.put(key, letter.model_dump_json().encode(),
                         content_type="application/json",
                         metadata={WRITER_METADATA_KEY: WRITER_METADATA_VALUE})
        return key

    def get(self, letter_id: str) -> DeadLetter:
        """One letter; NotFoundError when there is none with that id."""
        try:
            data = self.objects.get(self.key_of(letter_id))
        except ObjectNotFoundError:
            raise NotFoundError(f"no dead letter {letter_id}") from None
        return _parse(data)

    def list(self) -> Iterator[DeadLetter]:
        """Every letter, oldest first (unreadable objects under the prefix are skipped)."""
        for info in self.objects.list(f"{self.prefix}/"):
            if not info.key.endswith(".json"):
                continue
            try:
                yield _parse(self.objects.get(info.key))
            except (InvalidRequestError, ObjectNotFoundError):
                continue

    def delete(self, letter_id: str) -> None:
        self.objects.delete(self.key_of(letter_id))


def _parse(data: bytes) -> DeadLetter:
    try:
        return DeadLetter.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid dead letter: {validation_message(exc)}",
                                  code="invalid_dead_letter") from None

