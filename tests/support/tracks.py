"""Fabricated tracks for storage tests: a valid sidecar and some audio bytes, no generation."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from storage.keys import new_id
from storage.sidecar import AudioFacts, Sidecar, Summary
from storage.tracks import TrackStore


def make_track(store: TrackStore, n: int, when: datetime, *,
               prefix: str = "generations") -> tuple[Sidecar, bytes]:
    """A completed track's sidecar (not yet written) and fake audio bytes, numbered ``n``."""
    audio = f"RIFF-fake-audio-{n}".encode() * 10
    track_id = new_id(when)
    key = store.new_key(prefix, track_id)
    sc = Sidecar.model_validate({
        "id": track_id, "kind": "generation" if prefix == "generations" else "upload",
        "status": "completed", "created_at": when, "completed_at": when + timedelta(seconds=5),
        "prompt": f"prompt {n % 3}", "engine": "synth", "model": "synth-v1", "seed": n,
        "request": {"duration_s": 2.0, "seed": n}, "versions": {"musicfn": "0.1.0"},
        "audio_key": key.audio_key,
        "audio": AudioFacts(format="wav", subtype="PCM_16", sample_rate=32000, channels=2,
                            bit_depth=16, frames=64000, duration_s=2.0, bytes=len(audio),
                            sha256=hashlib.sha256(audio).hexdigest()),
        "summary": Summary(bpm=100 + n, key="C", mode="major", lufs=-16.0),
        "timings": {"generate": 0.5, "upload": 0.01},
    })
    return sc, audio
