"""Reading an uploaded audio file from a request without ever holding more than the cap.

Accepts ``multipart/form-data`` (field ``file``) or a raw audio body. A declared
``Content-Length`` over the cap is refused before reading; otherwise the body is read in chunks
and refused as soon as it passes the cap (chunked uploads included).
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from musicfn.errors import InvalidRequestError, LimitExceededError, PayloadTooLargeError

# Multipart framing (boundaries, part headers) on top of the file itself.
_MULTIPART_OVERHEAD = 64 * 1024


async def read_body(request: Request, cap: int, too_large: LimitExceededError) -> bytes:
    """The request body, refused with ``too_large`` (413) as soon as it passes ``cap`` bytes
    (a declared Content-Length over it: before reading anything)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and name; LimitExceededError (413) over ``max_bytes``."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    cap = max_bytes + (_MULTIPART_OVERHEAD if multipart else 0)
    body = await read_body(request, cap, _too_large(max_bytes))
    if not multipart:
        if not body:
            raise InvalidRequestError("empty upload: send the audio as the body or as the "
                                      "multipart field 'file'", code="empty_upload")
        return body, "upload"
    # Starlette parses the form from the cached body (the stream is consumed already).
    request._body = body
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequestError("multipart upload needs a file field named 'file'",
                                  code="missing_file")
    data = await upload.read()
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise InvalidRequestError("the uploaded file is empty", code="empty_upload")
    return data, upload.filename or "upload"


def _too_large(max_bytes: int) -> LimitExceededError:
    return PayloadTooLargeError(f"upload larger than {max_bytes:,} bytes",
                                code="upload_too_large")
