"""Request authentication: the API key for clients, the bearer token for MinIO's webhook.

One rule for both ways of presenting a secret: spaces and tabs around it are not part of it
(``X-API-Key:  k `` and ``Authorization: Bearer   k `` both present ``k``), as HTTP already
treats the whitespace around a header value. Secrets are compared in constant time
(``hmac.compare_digest``) so response timing does not leak how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request
from pydantic import SecretStr

from musicfn.errors import UnauthorizedError

API_KEY_HEADER = "X-API-Key"
_BLANKS = " \t"


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive, surrounding
    blanks ignored); ``headers`` with lower-case names."""
    scheme, _, token = headers.get("authorization", "").strip(_BLANKS).partition(" ")
    token = token.strip(_BLANKS)
    return token if scheme.lower() == "bearer" and token else None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents (``X-API-Key``, else ``Authorization: Bearer``);
    ``headers`` with lower-case names."""
    key = headers.get(API_KEY_HEADER.lower(), "").strip(_BLANKS)
    return key or bearer_token(headers)


def secret_matches(presented: str | None, expected: SecretStr) -> bool:
    """Constant-time comparison of a presented secret with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def has_api_key(headers: Mapping[str, str], api_key: SecretStr | None) -> bool:
    """Whether no key is configured or ``headers`` present it."""
    return api_key is None or secret_matches(presented_key(headers), api_key)


def check_api_key(request: Request, api_key: SecretStr | None) -> None:
    """Raise UnauthorizedError unless no key is configured or the request carries it
    (``X-API-Key: <key>`` or ``Authorization: Bearer <key>``)."""
    if not has_api_key(request.headers, api_key):
        raise UnauthorizedError("missing or invalid API key (send X-API-Key or "
                                "Authorization: Bearer)")


def check_bearer(request: Request, token: SecretStr | None) -> None:
    """Raise UnauthorizedError unless the request carries ``Authorization: Bearer <token>``.

    With no token configured every request is refused: an unauthenticated webhook would let
    anyone make musicfn process arbitrary objects.
    """
    if token is None or not secret_matches(bearer_token(request.headers), token):
        raise UnauthorizedError("missing or invalid bearer token")
