"""A read-through cache of final generation records, one per ingress replica.

A record in a final state (completed, failed, canceled) never changes again except by being
deleted, so its JSON body is kept for ``ttl_s`` and served without a catalogue round trip.
A delete through this replica forgets the entry at once; a delete through another replica is
seen here within ``ttl_s`` at most. ``ttl_s`` also bounds how old the presigned audio URL
inside a cached body gets, so it must stay far below the presign lifetime.
"""

from __future__ import annotations

import time
from collections import OrderedDict

# Few seconds: the hot case is a client (or many) polling a record that just ended.
FINAL_RECORD_TTL_S = 5.0
FINAL_RECORD_ENTRIES = 4096


class FinalRecords:
    """LRU of serialised final records (``bytes``) with an expiry per entry."""

    def __init__(self, *, ttl_s: float = FINAL_RECORD_TTL_S,
                 max_entries: int = FINAL_RECORD_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bool], tuple[float, bytes]] = OrderedDict()

    def get(self, track_id: str, *, waveform: bool) -> bytes | None:
        """The cached body of ``track_id`` (with or without its waveform), if fresh."""
        key = (track_id, waveform)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, body = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, track_id: str, body: bytes, *, waveform: bool) -> None:
        """Keep ``body`` (a final record) for ``ttl_s``."""
        key = (track_id, waveform)
        self._entries[key] = (time.monotonic() + self.ttl_s, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, track_id: str) -> None:
        """Drop ``track_id`` (it is being deleted or changed)."""
        self._entries.pop((track_id, False), None)
        self._entries.pop((track_id, True), None)
