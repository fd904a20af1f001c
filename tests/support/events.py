"""Helpers for the trigger tests: audio bytes, MinIO-format notifications, waiting."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote_plus

import numpy as np
import soundfile as sf

from tests.support.signals import pattern

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "minio-webhook-put.json"
T = TypeVar("T")


def minio_fixture() -> dict[str, Any]:
    """The real MinIO webhook payload (copied from ../shared/fixtures, or the repo's copy)."""
    local = Path(__file__).parents[1] / "fixtures" / "minio-webhook-put.json"
    path = local if local.exists() else FIXTURE
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def wav_bytes(seconds: float = 2.0, sr: int = 32_000, bpm: float = 100.0, seed: int = 0) -> bytes:
    """A short stereo drum-and-tone loop as 16-bit WAV bytes."""
    audio = pattern(bpm, seconds, sr, drums=True, seed=seed)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32).T, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def notification(bucket: str, key: str, etag: str = "", *,
                 event: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    """The fixture payload re-aimed at ``bucket/key`` (key URL-query-encoded like MinIO)."""
    body = copy.deepcopy(minio_fixture())
    body["EventName"] = event
    body["Key"] = f"{bucket}/{key}"
    rec = body["Records"][0]
    rec["eventName"] = event
    rec["s3"]["bucket"]["name"] = bucket
    rec["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    rec["s3"]["object"]["key"] = quote_plus(key, safe="")
    rec["s3"]["object"]["eTag"] = etag
    return body


def wait_for(check: Callable[[], T | None], timeout: float = 120.0, every: float = 0.25,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (deadline generous, never asserted
    as a speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)

