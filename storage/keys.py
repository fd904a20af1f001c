"""Track ids and object keys: ``<prefix>/YYYY/MM/DD/<id>.wav`` + ``<id>.json``.

Ids are server-generated and time-sortable (ULID layout: 48-bit millisecond timestamp + 80 random
bits, Crockford base32, lowercase, 26 chars), so lexical order of ids and keys is creation order.
The date in a key is the UTC date of the id's timestamp; the parser insists on both agreeing.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from musicfn.errors import InvalidKeyError

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
_ID_RE = re.compile(r"^[0-7][0-9a-hjkmnp-tv-z]{25}$")
_KEY_RE = re.compile(
    r"^(?P<prefix>[a-z][a-z0-9_-]*)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<id>[0-9a-z]{26})\.(?P<ext>wav|flac|ogg|mp3|json)$"
)
_MAX_KEY_LEN = 1024  # S3's own limit
# Reference audio uploaded with a generation request (melody or continuation prompt):
# ``inputs/YYYY/MM/DD/<id>.wav``. Not a track prefix: no sidecar, no catalogue row; the
# generation's sidecar names the key (``inputs``) as provenance.
INPUTS_PREFIX = "inputs"

AudioExtension = Literal["wav", "flac", "ogg", "mp3"]
AUDIO_EXTENSIONS: tuple[AudioExtension, ...] = ("wav", "flac", "ogg", "mp3")
Extension = Literal["wav", "flac", "ogg", "mp3", "json"]


def utc_now() -> datetime:
    """The current time in UTC: the one clock behind ids, key dates and timestamps."""
    return datetime.now(UTC)


_last_lock = threading.Lock()
_last: list[int] = [0, 0]  # (ms, random part) of the last id minted in this process


def new_id(now: datetime | None = None) -> str:
    """A new time-sortable id for ``now`` (UTC; default: the current time).

    Ids from the clock (no ``now``) are strictly increasing within a process, also within one
    millisecond or if the clock steps back (as in monotonic ULIDs).
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("new_id needs an aware datetime (UTC)")
    ms = int((now or utc_now()).timestamp() * 1000)
    rand = secrets.randbits(80)
    if now is None:
        with _last_lock:
            if ms <= _last[0]:
                ms = _last[0]
                rand = max(rand, _last[1] + 1)
                if rand >= 1 << 80:  # astronomically unlikely: borrow the next millisecond
                    ms, rand = ms + 1, secrets.randbits(79)
            _last[0], _last[1] = ms, rand
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def validate_id(track_id: str) -> str:
    """Return ``track_id`` if it is a well-formed musicfn id, else raise InvalidKeyError."""
    if not isinstance(track_id, str) or not _ID_RE.match(track_id):
        raise InvalidKeyError(f"invalid track id {track_id!r}: expected 26 lowercase base32 chars",
                              code="invalid_id")
    return track_id


def id_timestamp(track_id: str) -> datetime:
    """The UTC creation time encoded in an id (millisecond precision)."""
    validate_id(track_id)
    value = 0
    for ch in track_id[:10]:
        value = (value << 5) | _ALPHABET.index(ch)
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class TrackKey:
    """Where one track lives: its prefix, UTC creation date, id and audio format."""

    prefix: str
    day: date
    id: str
    audio_ext: AudioExtension = "wav"

    @classmethod
    def for_id(cls, prefix: str, track_id: str, audio_ext: AudioExtension = "wav") -> TrackKey:
        """The key of ``track_id`` under ``prefix``, dated by the id's own timestamp."""
        return cls(prefix=prefix, day=id_timestamp(track_id).date(), id=track_id,
                   audio_ext=audio_ext)

    @property
    def folder(self) -> str:
        return f"{self.prefix}/{self.day:%Y/%m/%d}"

    @property
    def audio_key(self) -> str:
        return f"{self.folder}/{self.id}.{self.audio_ext}"

    @property
    def sidecar_key(self) -> str:
        return f"{self.folder}/{self.id}.json"


def input_key(input_id: str) -> str:
    """The key of uploaded reference audio ``input_id``: ``inputs/YYYY/MM/DD/<id>.wav``."""
    return TrackKey.for_id(INPUTS_PREFIX, input_id).audio_key


def parse_input_key(key: str) -> str:
    """The id of an ``inputs/`` key (the layout of ``input_key``), else InvalidKeyError."""
    parsed, ext = parse_key(key, (INPUTS_PREFIX,))
    if ext != "wav":
        raise InvalidKeyError(f"an input key ends in .wav: {key!r}")
    return parsed.id


def day_prefix(prefix: str, day: date) -> str:
    """The listing prefix of one day's objects, e.g. ``generations/2026/11/22/``."""
    return f"{prefix}/{day:%Y/%m/%d}/"


def parse_key(key: str, allowed_prefixes: tuple[str, ...]) -> tuple[TrackKey, Extension]:
    """Parse a track object key, rejecting anything outside the layout.

    Rejected: empty or over-long keys, absolute paths, backslashes, any percent-encoding or
    traversal (``..``, ``%2e%2e``), control characters, prefixes not in ``allowed_prefixes``,
    impossible dates, malformed ids, an id whose timestamp is not on the key's date, and
    extensions other than audio (wav/flac/ogg/mp3) and ``.json``.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("empty object key")
    if len(key) > _MAX_KEY_LEN:
        raise InvalidKeyError(f"object key longer than {_MAX_KEY_LEN} characters")
    if key.startswith("/"):
        raise InvalidKeyError(f"absolute path not allowed as a key: {key!r}")
    if "%" in key or "\\" in key or ".." in key:
        raise InvalidKeyError(f"key contains traversal or encoding characters: {key!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKeyError(f"key contains control characters: {key!r}")
    match = _KEY_RE.match(key)
    if match is None:
        raise InvalidKeyError(f"key does not match <prefix>/YYYY/MM/DD/<id>.<ext>: {key!r}")
    prefix = match["prefix"]
    if prefix not in allowed_prefixes:
        allowed = ", ".join(allowed_prefixes)
        raise InvalidKeyError(f"unknown key prefix {prefix!r} (allowed: {allowed})")
    try:
        day = date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError as exc:
        raise InvalidKeyError(f"impossible date in key {key!r}: {exc}") from None
    track_id = validate_id(match["id"])
    if id_timestamp(track_id).date() != day:
        raise InvalidKeyError(f"key date {day} does not match the id's creation date in {key!r}")
    ext: Extension = match["ext"]  # type: ignore[assignment]  # the regex admits only these
    audio_ext: AudioExtension = "wav" if ext == "json" else ext
    return TrackKey(prefix=prefix, day=day, id=track_id, audio_ext=audio_ext), ext
