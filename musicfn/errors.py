"""The one musicfn error hierarchy.

Every layer raises these; foreign errors (botocore, duckdb, soundfile, torch) are translated at
the layer boundary that sees them. The HTTP layer maps classes to status codes in one place.

    MusicfnError
    ├── InputError                 bad input from a caller: never retried
    │   ├── InvalidKeyError        an object key outside the known layout
    │   ├── InvalidRequestError    a request that fails validation
    │   ├── LimitExceededError     a value over a configured limit (duration, length, count)
    │   │   └── PayloadTooLargeError   a request body over its byte cap (the only HTTP 413)
    │   ├── InvalidAudioError      undecodable / invalid audio
    │   ├── MalformedPayloadError  a body that is not the JSON document the route takes
    │   ├── RequestTimeoutError    the request body did not arrive in time
    │   └── UnsupportedError       a feature the chosen engine or model does not offer
    ├── UnauthorizedError          missing or wrong credentials
    ├── NotFoundError              the thing asked for does not exist
    │   └── ObjectNotFoundError    (also a StorageError)
    ├── ConflictError              the state does not allow the operation
    │   ├── ObjectExistsError      (also a StorageError) conditional write lost
    │   └── InvalidTransitionError lifecycle step not allowed from the current status
    ├── StorageError               object store failures
    │   ├── BucketNotFoundError
    │   ├── AccessDeniedError
    │   ├── StorageUnreachableError  endpoint down / timed out (names the endpoint); retryable
    │   └── TransientStorageError    throttling, 5xx; retryable
    ├── CatalogueError             DuckDB catalogue failures
    │   ├── CatalogueLockedError   another process holds the file (names the file)
    │   └── CatalogueCorruptError  the file is not a catalogue we can read
    ├── LeaseLostError             a runner no longer surely holds its job: it stops writing
    ├── EngineError                generation engine failures
    │   ├── NoGpuError             GPUs asked for, none in the cluster
    │   └── EngineOverloadedError  out of memory / queue full; retry later
    └── ConfigurationError         bad settings or a missing tool (binary, port taken)
        └── EmbeddedS3Error
"""

from __future__ import annotations


class MusicfnError(Exception):
    """Base of every error musicfn raises on purpose.

    ``code`` is a stable, machine-readable snake_case identifier; ``message`` is one line a person
    can act on. ``retryable`` tells callers whether the same call may succeed later.
    """

    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        """The JSON body shape used by the HTTP layer and the CLI's ``--json`` output."""
        return {"code": self.code, "message": self.message}

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the custom code across pickling (Ray ships exceptions between processes).
        return (_rebuild, (type(self), self.message, self.code))


def original_error(exc: BaseException) -> BaseException:
    """The ``MusicfnError`` behind Ray's wrappers, else ``exc`` itself.

    A task's error reaches callers as a ``RayTaskError`` that subclasses the original class
    but carries the class-default ``code``; the instance raised is kept as ``cause`` (nested
    once per failed upstream task).
    """
    found: BaseException = exc
    for _ in range(16):
        cause = getattr(found, "cause", None)
        if not isinstance(cause, BaseException):
            break
        found = cause
    return found if isinstance(found, MusicfnError) else exc


def _rebuild(cls: type[MusicfnError], message: str, code: str) -> MusicfnError:
    err = cls.__new__(cls)
    MusicfnError.__init__(err, message, code=code)
    return err


class InputError(MusicfnError):
    code = "invalid_input"


class InvalidKeyError(InputError):
    code = "invalid_key"


class InvalidRequestError(InputError):
    code = "invalid_request"


class LimitExceededError(InputError):
    """A value over a configured limit (a bad value: HTTP 400, the field named)."""

    code = "limit_exceeded"


class PayloadTooLargeError(LimitExceededError):
    """A request body (upload, notification) over its byte cap: HTTP 413, nothing else is."""

    code = "payload_too_large"


class InvalidAudioError(InputError):
    code = "invalid_audio"


class MalformedPayloadError(InputError):
    code = "malformed_payload"


class RequestTimeoutError(InputError):
    """The client did not send its request (body) in time."""


class UnsupportedError(InputError):
    code = "unsupported"


class UnauthorizedError(MusicfnError):
    code = "unauthorized"


class NotFoundError(MusicfnError):
    code = "not_found"


class ConflictError(MusicfnError):
    code = "conflict"


class InvalidTransitionError(ConflictError):
    code = "invalid_transition"


class StorageError(MusicfnError):
    code = "storage_error"


class ObjectNotFoundError(StorageError, NotFoundError):
    code = "object_not_found"


class ObjectExistsError(StorageError, ConflictError):
    code = "object_exists"


class BucketNotFoundError(StorageError):
    code = "bucket_not_found"


class AccessDeniedError(StorageError):
    code = "storage_access_denied"


class StorageUnreachableError(StorageError):
    code = "storage_unreachable"
    retryable = True


class TransientStorageError(StorageError):
    code = "storage_transient"
    retryable = True


class CatalogueError(MusicfnError):
    code = "catalogue_error"


class CatalogueLockedError(CatalogueError):
    code = "catalogue_locked"


class CatalogueCorruptError(CatalogueError):
    code = "catalogue_corrupt"


class LeaseLostError(MusicfnError):
    """The job's lease may have passed to another runner: stop before writing anything more
    (the other runner re-drives it with the same keys)."""

    code = "lease_lost"


class EngineError(MusicfnError):
    code = "engine_error"


class NoGpuError(EngineError):
    code = "no_gpu"


class EngineOverloadedError(EngineError):
    code = "engine_overloaded"
    retryable = True


class ConfigurationError(MusicfnError):
    code = "configuration_error"


class EmbeddedS3Error(ConfigurationError):
    code = "embedded_s3_error"
