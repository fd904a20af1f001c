"""Track ids and keys: round trips and every rejected key form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from musicfn.errors import InvalidKeyError
from storage.keys import TrackKey, id_timestamp, new_id, parse_key, validate_id

PREFIXES = ("generations", "processed")


def test_ids_are_time_sortable_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(2000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    earlier = new_id(datetime(2020, 1, 1, tzinfo=UTC))
    assert earlier < ids[0]


def test_id_encodes_its_creation_time() -> None:
    when = datetime(2026, 11, 22, 23, 59, 59, 123000, tzinfo=UTC)
    assert id_timestamp(new_id(when)) == when


def test_new_id_needs_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        new_id(datetime(2026, 1, 1))


@pytest.mark.parametrize("when", [
    datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    datetime(1999, 12, 31, 12, tzinfo=UTC),
])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_key_round_trip(when: datetime, prefix: str) -> None:
    track_id = new_id(when)
    key = TrackKey.for_id(prefix, track_id)
    assert key.audio_key == f"{prefix}/{when:%Y/%m/%d}/{track_id}.wav"
    assert key.sidecar_key == f"{prefix}/{when:%Y/%m/%d}/{track_id}.json"
    assert parse_key(key.audio_key, PREFIXES) == (key, "wav")
    assert parse_key(key.sidecar_key, PREFIXES) == (key, "json")


def test_key_date_is_utc_not_local() -> None:
    # 23:30 at UTC-5 is already the next day in UTC.
    local = datetime(2026, 11, 22, 23, 30, tzinfo=UTC) + timedelta(hours=5)
    key = TrackKey.for_id("generations", new_id(local))
    assert key.day == date(2026, 11, 23)


def test_flac_audio_key_round_trip() -> None:
    key = TrackKey.for_id("generations", new_id(), "flac")
    assert key.audio_key.endswith(".flac")
    assert parse_key(key.audio_key, PREFIXES) == (key, "flac")


GOOD = TrackKey.for_id("generations", new_id(datetime(2026, 11, 22, 12, tzinfo=UTC)))
GOOD_ID = GOOD.id


@pytest.mark.parametrize("bad", [
    "",
    "/generations/2026/11/22/x.wav",
    f"/{GOOD.audio_key}",
    f"generations/2026/11/22/../22/{GOOD_ID}.wav",
    f"generations/2026/11/%2e%2e/{GOOD_ID}.wav",
    f"generations/2026/11/%2E%2E/{GOOD_ID}.wav",
    f"generations%2f2026/11/22/{GOOD_ID}.wav",
    f"generations\\2026\\11\\22\\{GOOD_ID}.wav",
    f"generations/2026/11/22/{GOOD_ID}.wav\x00",
    f"incoming/2026/11/22/{GOOD_ID}.wav",  # not a track prefix
    f"other-bucket/generations/2026/11/22/{GOOD_ID}.wav",
    f"s3://musicfn/generations/2026/11/22/{GOOD_ID}.wav",
    f"generations/2026/02/30/{GOOD_ID}.wav",  # impossible date
    f"generations/2026/13/01/{GOOD_ID}.wav",
    f"generations/2026/11/21/{GOOD_ID}.wav",  # id created on another day
    f"generations/2026/11/22/{GOOD_ID}.exe",
    f"generations/2026/11/22/{GOOD_ID}",
    f"generations/2026/11/22/{GOOD_ID.upper()}.wav",
    "generations/2026/11/22/not-an-id-at-all-xxxxxxxxxx.wav",
    f"generations/2026/11/22/extra/{GOOD_ID}.wav",
    "generations/" + "a" * 2000 + ".wav",
])
def test_rejected_keys(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_key(bad, PREFIXES)


@pytest.mark.parametrize("bad", ["", "x", "0" * 25, "8" + "0" * 25, "0" * 25 + "u", GOOD_ID + "0"])
def test_rejected_ids(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_id(bad)
