"""The S3 object store: musicfn errors instead of botocore's.

Talks plain S3 (path-style addressing, SigV4), so MinIO, SeaweedFS or AWS work by endpoint URL.
The hot calls (PUT, GET, HEAD: every event and job makes some) go through ``storage.s3_lean``
at a sixth to a tenth of boto3's CPU per call; the rest (buckets, listings, copies, deletes,
presigned URLs) through one boto3 client. Throttling and connection errors are retried with
exponential backoff on both paths; whatever is still failing afterwards surfaces as a
``StorageError``, translated the same way (``storage.s3_lean.storage_error``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from musicfn.errors import (
    BucketNotFoundError,
    InvalidRequestError,
    MusicfnError,
    ObjectNotFoundError,
    StorageError,
)
from musicfn.metrics import record_s3_error
from musicfn.settings import Settings
from storage.keys import day_prefix
from storage.s3_lean import LeanS3, ObjectInfo, S3Target, storage_error, unreachable_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MAX_PRESIGN_EXPIRY_S", "ObjectInfo", "ObjectStore"]

log = logging.getLogger(__name__)
_ALREADY_OWNED = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                ConnectionClosedError)
MAX_PRESIGN_EXPIRY_S = 3600


class ObjectStore:
    """S3 operations on one bucket, with musicfn's error translation."""

    def __init__(self, settings: Settings, *, bucket: str | None = None) -> None:
        self.settings = settings
        self.bucket = bucket or settings.bucket
        self.endpoint = settings.endpoint_url
        self._lean = LeanS3(S3Target.from_settings(settings, self.bucket))
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
                connect_timeout=settings.s3_connect_timeout_s,
                read_timeout=settings.s3_read_timeout_s,
                max_pool_connections=32,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    @contextlib.contextmanager
    def _translate(self, op: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore failures of ``op`` into musicfn storage errors."""
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise storage_error(
                op, bucket=self.bucket, key=key, endpoint=self.endpoint,
                status=exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0),
                code=str(err.get("Code", "")), message=str(err.get("Message", ""))) from None
        except _UNREACHABLE as exc:
            raise unreachable_error(op, bucket=self.bucket, key=key, endpoint=self.endpoint,
                                    cause=exc) from None
        except BotoCoreError as exc:
            record_s3_error(op, type(exc).__name__)
            raise StorageError(f"S3 client error during {op} {where}: {exc}") from None

    # -- bucket ----------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe under races)."""
        try:
            self.ping()
            return
        except (ObjectNotFoundError, BucketNotFoundError):
            pass
        with self._translate("create_bucket"):
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _ALREADY_OWNED:
                    raise

    def ping(self) -> None:
        """Raise a StorageError unless the endpoint answers for the bucket."""
        with self._translate("head_bucket"):
            self._client.head_bucket(Bucket=self.bucket)

    # -- objects ---------------------------------------------------------------------------

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> str:
        """Store ``body`` at ``key`` atomically; return its ETag (unquoted).

        With ``if_absent`` the write only happens when no object exists there
        (``If-None-Match: *``); otherwise ``ObjectExistsError``.
        """
        etag = self._lean.put(key, body, content_type=content_type, metadata=metadata,
                              if_absent=if_absent)
        log.info("put s3://%s/%s (%d bytes)", self.bucket, key, len(body))
        return etag

    def get(self, key: str) -> bytes:
        """The whole object at ``key``."""
        return self._lean.get(key)

    def get_many(self, keys: list[str], *, workers: int = 8) -> Iterator[bytes | MusicfnError]:
        """Fetch many objects concurrently; yields, in order, each body or the error for it."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(self.fetch, keys)

    def fetch(self, key: str) -> bytes | MusicfnError:
        """The body of ``key``, or the translated error (returned, not raised: for bulk use)."""
        try:
            return self._lean.get(key)
        except MusicfnError as exc:
            return exc

    def head(self, key: str) -> ObjectInfo:
        """Size, ETag, content type and user metadata of ``key``."""
        return self._lean.head(key)

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        try:
            self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy within the bucket (metadata is copied too)."""
        with self._translate("copy", dst_key):
            self._client.copy_object(
                Bucket=self.bucket, Key=dst_key,
                CopySource={"Bucket": self.bucket, "Key": src_key},
            )

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing object is not an error (S3 semantics)."""
        with self._translate("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)
        log.info("deleted s3://%s/%s", self.bucket, key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete up to any number of keys, 1000 per request."""
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            with self._translate("delete_objects"):
                resp = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"could not delete {len(errors)} object(s), first {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}")

    # -- listing ---------------------------------------------------------------------------

    def list(self, prefix: str, *, start_after: str | None = None,
             page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in key order, following pagination lazily."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            with self._translate("list", prefix):
                resp = self._client.list_objects_v2(**kwargs)
            for obj in resp.get("Contents", []):
                yield ObjectInfo(key=obj["Key"], size=obj["Size"],
                                 etag=obj.get("ETag", "").strip('"'),
                                 last_modified=obj["LastModified"])
            if not resp.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def list_dates(self, prefix: str, start: date, end: date) -> Iterator[ObjectInfo]:
        """Objects under ``prefix/YYYY/MM/DD/`` for every day in ``[start, end]`` (inclusive).

        Lists whole months where the range covers them and single days at its edges, by
        prefix only: ``StartAfter`` on folder-like keys differs between S3 implementations
        (SeaweedFS skips the whole "folder").
        """
        if end < start:
            raise InvalidRequestError(f"date range ends ({end}) before it starts ({start})")
        for listing_prefix in _date_prefixes(prefix, start, end):
            yield from self.list(listing_prefix)

    # -- presigning ------------------------------------------------------------------------

    def presign_get(self, key: str, expires_s: int | None = None) -> str:
        """A URL that allows exactly one thing: GET of ``key`` until it expires.

        The signature covers the method, so the URL cannot be used to PUT or DELETE.
        """
        expiry = expires_s if expires_s is not None else self.settings.presign_expiry_s
        if not 1 <= expiry <= MAX_PRESIGN_EXPIRY_S:
            raise InvalidRequestError(
                f"presign expiry must be 1..{MAX_PRESIGN_EXPIRY_S} s, got {expiry}")
        with self._translate("presign", key):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expiry,
                HttpMethod="GET",
            )


def _date_prefixes(prefix: str, start: date, end: date) -> Iterator[str]:
    """Listing prefixes that cover exactly the days ``start..end``, in key order."""
    day = start
    while day <= end:
        month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        if day.day == 1 and month_end <= end:
            yield f"{prefix}/{day:%Y/%m}/"
            day = month_end + timedelta(days=1)
        else:
            yield day_prefix(prefix, day)
            day += timedelta(days=1)
