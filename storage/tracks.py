"""Writing and reading tracks in the bucket: audio first, then the sidecar (the commit marker).

A track is visible (to reindex, to the catalogue) only once its sidecar exists. If the sidecar
write fails, the audio is removed again; if the process dies in between, the audio is an orphan
that ``reindex`` reports and ``cleanup --orphans`` removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable

from musicfn.errors import InvalidRequestError, StorageError
from musicfn.settings import Settings
from storage.keys import AudioExtension, TrackKey, parse_key
from storage.objects import ObjectStore
from storage.sidecar import Sidecar

log = logging.getLogger(__name__)

# User metadata on every object musicfn writes (x-amz-meta-musicfn-writer): the loop guard that
# keeps object-store triggers from processing musicfn's own output.
WRITER_METADATA_KEY = "musicfn-writer"
WRITER_METADATA_VALUE = "musicfn"
CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg",
}


def written_by_musicfn(metadata: dict[str, str]) -> bool:
    """True when an object's user metadata carries musicfn's writer marker."""
    return metadata.get(WRITER_METADATA_KEY) == WRITER_METADATA_VALUE


class TrackStore:
    """Tracks (audio + sidecar pairs) under the configured prefixes of one bucket."""

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self.objects = objects
        self.settings = settings

    def key_for(self, sidecar: Sidecar) -> TrackKey:
        """Where ``sidecar``'s track lives (from its audio_key, which must be set)."""
        if sidecar.audio_key is None:
            raise InvalidRequestError(f"track {sidecar.id} has no audio_key")
        key, _ = parse_key(sidecar.audio_key, self.settings.track_prefixes)
        if key.id != sidecar.id:
            raise InvalidRequestError(f"audio_key {sidecar.audio_key} is not track {sidecar.id}")
        return key

    def new_key(self, prefix: str, track_id: str, audio_ext: AudioExtension = "wav") -> TrackKey:
        """The key of a new track; only track prefixes are allowed."""
        if prefix not in self.settings.track_prefixes:
            raise InvalidRequestError(f"{prefix!r} is not a track prefix")
        return TrackKey.for_id(prefix, track_id, audio_ext)

    def write(self, sidecar: Sidecar, audio: bytes,
              fence: Callable[[], None] | None = None) -> Sidecar:
        """Store the audio, then the sidecar; return the sidecar as stored (with the ETag).

        The sidecar's ``audio.sha256`` and ``audio.bytes`` must describe ``audio``. ``fence``
        is called before each write and raises to stop the writer (a job runner whose lease
        is no longer sure): what it already wrote stays, for the next holder to overwrite.
        """
        check = fence or (lambda: None)
        key = self.key_for(sidecar)
        if sidecar.audio is None:
            raise InvalidRequestError(f"track {sidecar.id} has no audio facts")
        digest = hashlib.sha256(audio).hexdigest()
        if digest != sidecar.audio.sha256 or len(audio) != sidecar.audio.bytes:
            raise InvalidRequestError(f"audio bytes of track {sidecar.id} do not match its "
                                      "sidecar (sha256/size)")
        meta = {WRITER_METADATA_KEY: WRITER_METADATA_VALUE, "musicfn-id": sidecar.id,
                "musicfn-sha256": digest}
        check()
        etag = self.objects.put(key.audio_key, audio,
                                content_type=CONTENT_TYPES[key.audio_ext], metadata=meta)
        stored = sidecar.model_copy(
            update={"audio": sidecar.audio.model_copy(update={"etag": etag})})
        check()
        try:
            self.objects.put(key.sidecar_key, stored.to_json(), content_type="application/json",
                             metadata={WRITER_METADATA_KEY: WRITER_METADATA_VALUE,
                                       "musicfn-id": sidecar.id})
        except StorageError:
            with contextlib.suppress(StorageError):
                self.objects.delete(key.audio_key)
            raise
        return stored

    def rewrite_sidecar(self, sidecar: Sidecar) -> None:
        """Replace the sidecar of an already stored track (e.g. to mark its source removed)."""
        key = self.key_for(sidecar)
        self.objects.put(key.sidecar_key, sidecar.to_json(), content_type="application/json",
                         metadata={WRITER_METADATA_KEY: WRITER_METADATA_VALUE,
                                   "musicfn-id": sidecar.id})

    def read_sidecar(self, key: TrackKey) -> Sidecar:
        """The sidecar stored for ``key``."""
        return Sidecar.from_json(self.objects.get(key.sidecar_key))

    def read_audio(self, key: TrackKey) -> bytes:
        return self.objects.get(key.audio_key)

    def delete(self, key: TrackKey) -> None:
        """Remove a track: the sidecar first (un-commit), then the audio."""
        self.objects.delete(key.sidecar_key)
        self.objects.delete(key.audio_key)
