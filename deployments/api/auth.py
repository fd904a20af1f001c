"""Request authentication: the API key for clients, the bearer token for MinIO's webhook.

Secrets are compared in constant time (``hmac.compare_digest``) so response timing does not
leak how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request
from pydantic import SecretStr

from musicfn.errors import UnauthorizedError


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents (``X-API-Key``, or ``Authorization: Bearer``);
    ``headers`` with lower-case names."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def secret_matches(presented: str | None, expected: SecretStr) -> bool:
    """Constant-time comparison of a presented secret with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def check_api_key(request: Request, api_key: SecretStr | None) -> None:
    """Raise UnauthorizedError unless no key is configured or the request carries it
    (``X-API-Key: <key>`` or ``Authorization: Bearer <key>``)."""
    if api_key is None:
        return
    if not secret_matches(presented_key(request.headers), api_key):
        raise UnauthorizedError("missing or invalid API key (send X-API-Key or "
                                "Authorization: Bearer)")


def check_bearer(request: Request, token: SecretStr | None) -> None:
    """Raise UnauthorizedError unless the request carries ``Authorization: Bearer <token>``.

    With no token configured every request is refused: an unauthenticated webhook would let
    anyone make musicfn process arbitrary objects.
    """
    auth = request.headers.get("authorization", "")
    scheme, _, presented = auth.partition(" ")
    if token is None or scheme.lower() != "bearer" or not secret_matches(presented.strip(),
                                                                         token):
        raise UnauthorizedError("missing or invalid bearer token")
