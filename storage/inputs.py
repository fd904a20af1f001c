"""Reference audio uploaded with a generation request, stored under ``inputs/`` (storage/keys).

The ingress stores an upload here before the job is queued, so the job's payload carries a key
and a sha256, never samples; the runner reads it back and checks the digest. Objects carry
musicfn's writer marker like every object musicfn writes.
"""

from __future__ import annotations

import hashlib

from musicfn.errors import InvalidRequestError
from storage.keys import input_key, new_id, parse_input_key
from storage.objects import ObjectStore
from storage.tracks import WRITER_METADATA_KEY, WRITER_METADATA_VALUE

INPUT_CONTENT_TYPE = "audio/wav"


def put_input(objects: ObjectStore, wav: bytes) -> tuple[str, str]:
    """Store ``wav`` under a new ``inputs/`` key; return (key, sha256)."""
    digest = hashlib.sha256(wav).hexdigest()
    input_id = new_id()
    key = input_key(input_id)
    objects.put(key, wav, content_type=INPUT_CONTENT_TYPE,
                metadata={WRITER_METADATA_KEY: WRITER_METADATA_VALUE, "musicfn-id": input_id,
                          "musicfn-sha256": digest})
    return key, digest


def read_input(objects: ObjectStore, key: str, sha256: str) -> bytes:
    """The bytes at ``key`` (an ``inputs/`` key or a track's audio key), checked against
    ``sha256``: InvalidRequestError (``input_changed``) if they are not the bytes referenced."""
    data = objects.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidRequestError(f"reference audio {key} changed since the job was accepted",
                                  code="input_changed")
    return data


def delete_input(objects: ObjectStore, key: str) -> None:
    """Remove an uploaded input (only ``inputs/`` keys: never a track's audio)."""
    parse_input_key(key)
    objects.delete(key)
