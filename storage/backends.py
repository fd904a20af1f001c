"""Opening the storage backends from settings: embedded or external S3, bucket, catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from musicfn.settings import Settings
from storage.catalogue.store import Catalogue
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from storage.tracks import TrackStore


@dataclass
class Backends:
    """The storage a command or service works with."""

    settings: Settings
    objects: ObjectStore
    tracks: TrackStore
    embedded: EmbeddedS3 | None


def start_object_store(settings: Settings) -> tuple[ObjectStore, EmbeddedS3 | None]:
    """Start (or reuse) the embedded S3 when no endpoint is configured; ensure the bucket."""
    embedded = EmbeddedS3.from_settings(settings).start() if settings.uses_embedded_s3 else None
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    return objects, embedded


@contextmanager
def open_storage(settings: Settings, *, keep_s3_running: bool = False) -> Iterator[Backends]:
    """Object storage for the duration of a block. An embedded S3 started here is stopped at
    the end unless ``keep_s3_running``; one that was already running is left alone."""
    objects, embedded = start_object_store(settings)
    try:
        yield Backends(settings, objects, TrackStore(objects, settings), embedded)
    finally:
        if embedded is not None and not keep_s3_running:
            embedded.stop()


@contextmanager
def open_catalogue(settings: Settings) -> Iterator[Catalogue]:
    """The catalogue file (with its job queue), owned by this process for the block
    (CatalogueLockedError if not)."""
    catalogue = Catalogue(settings.catalogue_file,
                             checkpoint_mb=settings.catalogue_checkpoint_mb)
    try:
        yield catalogue
    finally:
        catalogue.close()
