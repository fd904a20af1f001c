"""Small uploads sent together: the coalescer's limits, and one bad file failing only itself
(real SeaweedFS; without a Ray connection the batch runs on a thread, the same function)."""

from __future__ import annotations

import asyncio

import pytest

from functions.pipeline import ClipOptions
from jobs.upload_task import UploadBatcher
from musicfn.errors import InputError
from musicfn.settings import Settings
from storage.keys import id_timestamp, new_id
from storage.objects import ObjectStore
from storage.owner_batch import Coalescer
from storage.sidecar import Sidecar, SourceRef
from tests.support.events import wav_bytes


def test_coalescer_bounds_batches_and_calls_in_flight() -> None:
    calls: list[list[int]] = []
    in_flight = peak = 0

    async def many(items: list[int]) -> list[int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        calls.append(items)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return [i * 2 for i in items]

    async def main() -> list[int]:
        c: Coalescer[int, int] = Coalescer(many, max_batch=4, max_inflight=2)
        return list(await asyncio.gather(*(c.one(i) for i in range(30))))

    assert asyncio.run(main()) == [i * 2 for i in range(30)]
    assert peak == 2
    assert all(len(b) <= 4 for b in calls)
    assert sorted(i for b in calls for i in b) == list(range(30))
    assert len(calls) < 30  # shared calls, not one per item


def _pending(settings: Settings, key: str) -> Sidecar:
    track_id = new_id()
    return Sidecar(id=track_id, kind="upload", status="pending",
                   created_at=id_timestamp(track_id), request={"filename": key},
                   source=SourceRef(bucket=settings.bucket, key=key, etag="x"))


def test_one_bad_upload_in_a_batch_fails_only_itself(settings: Settings,
                                                    objects: ObjectStore) -> None:
    objects.ensure_bucket()
    keys = ["incoming/b/0.wav", "incoming/b/bad.wav", "incoming/b/2.wav"]
    for key in keys:
        data = b"not audio at all" if "bad" in key else wav_bytes(0.3)
        objects.put(key, data, content_type="audio/wav")
    batcher = UploadBatcher(settings, ClipOptions())

    async def main() -> list[Sidecar | BaseException]:
        jobs = [batcher.store(k, _pending(settings, k)) for k in keys]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    good0, bad, good2 = asyncio.run(main())
    assert isinstance(bad, InputError)
    for stored, key in ((good0, keys[0]), (good2, keys[2])):
        assert isinstance(stored, Sidecar)
        assert stored.source is not None and stored.source.key == key
        assert stored.audio_key is not None and objects.exists(stored.audio_key)


@pytest.mark.parametrize("count", [1, 5])
def test_batcher_answers_each_upload(settings: Settings, objects: ObjectStore,
                                     count: int) -> None:
    objects.ensure_bucket()
    keys = [f"incoming/n{count}/{i}.wav" for i in range(count)]
    for key in keys:
        objects.put(key, wav_bytes(0.2), content_type="audio/wav")
    batcher = UploadBatcher(settings, ClipOptions())

    async def main() -> list[Sidecar]:
        return list(await asyncio.gather(*(batcher.store(k, _pending(settings, k))
                                           for k in keys)))

    stored = asyncio.run(main())
    assert [s.source.key for s in stored if s.source is not None] == keys


def test_an_upload_past_its_jobs_fence_writes_nothing(settings: Settings,
                                                     objects: ObjectStore) -> None:
    """A batch task that starts its writes after the job's write deadline (its lease may
    have passed to another runner) refuses them; the others in the batch are written."""
    import time

    from musicfn.errors import LeaseLostError
    from storage.tracks import TrackStore

    objects.ensure_bucket()
    keys = ["incoming/f/late.wav", "incoming/f/fine.wav"]
    for key in keys:
        objects.put(key, wav_bytes(0.2), content_type="audio/wav")
    batcher = UploadBatcher(settings, ClipOptions())
    late, fine = (_pending(settings, k) for k in keys)

    async def main() -> list[Sidecar | BaseException]:
        return list(await asyncio.gather(
            batcher.store(keys[0], late, deadline=time.time() - 1),
            batcher.store(keys[1], fine, deadline=time.time() + 60), return_exceptions=True))

    refused, stored = asyncio.run(main())
    assert isinstance(refused, LeaseLostError)
    assert isinstance(stored, Sidecar) and stored.audio_key is not None
    late_key = TrackStore(objects, settings).new_key(settings.processed_prefix, late.id)
    assert not objects.exists(late_key.audio_key) and not objects.exists(late_key.sidecar_key)
