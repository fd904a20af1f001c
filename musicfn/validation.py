"""Turning pydantic validation failures into musicfn's one-line errors."""

from __future__ import annotations

from pydantic import ValidationError

from musicfn.errors import InvalidRequestError


def integral(value: object) -> object:
    """For a strict integer field: a JSON integer may be written ``3.0`` (a boolean or a
    string is still not a number). Use as ``BeforeValidator(integral)``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def validation_message(exc: ValidationError) -> str:
    """The first problem of ``exc`` as ``field: message`` (or just the message)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def as_request_error(exc: ValidationError, code: str = "invalid_request") -> InvalidRequestError:
    """``exc`` as the InvalidRequestError callers see."""
    return InvalidRequestError(validation_message(exc), code=code)
