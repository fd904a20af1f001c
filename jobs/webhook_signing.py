"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` + base64 of the key bytes. The signed content is
``<webhook-id>.<webhook-timestamp>.<body>``; the signature is HMAC-SHA256 with the decoded key,
sent base64-encoded as ``webhook-signature: v1,<sig>``. Receivers verify it with any Standard
Webhooks library (``Webhook(secret).verify(body, headers)``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from musicfn.errors import ConfigurationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
MIN_KEY_BYTES = 24  # the spec's lower bound (192 bits)


def new_secret() -> str:
    """A fresh ``whsec_`` secret holding 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def validate_secret(secret: str) -> str:
    """Check that ``secret`` is ``whsec_<base64>`` of at least 24 bytes; returns it.

    Raises ``ConfigurationError`` otherwise (meant for a settings validator at startup).
    """
    _key(secret)
    return secret


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64 HMAC-SHA256>``) for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secret: str | None, msg_id: str, timestamp: int,
                      body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt; unsigned (no ``webhook-signature``)
    when ``secret`` is None."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "content-type": "application/json"}
    if secret is not None:
        headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
    return headers


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError(f"webhook secret must start with {SECRET_PREFIX!r}",
                                 code="invalid_webhook_secret")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("webhook secret is not whsec_<base64>",
                                 code="invalid_webhook_secret") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"webhook secret key is {len(key)} bytes; at least "
                                 f"{MIN_KEY_BYTES} are required", code="invalid_webhook_secret")
    return key
