"""Catalogue queries: the filter model, its SQL, and stable cursor pagination.

Pages are ordered by id descending; ids are time-sortable, so that is newest first, and a cursor
(the last id of a page) stays valid while rows are added or removed.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from musicfn.errors import InvalidKeyError, InvalidRequestError
from storage.catalogue.schema import naive_utc
from storage.keys import validate_id
from storage.sidecar import Mode, Sidecar, TrackKind, TrackStatus

_CURSOR_PREFIX = "v1:"


class TrackQuery(BaseModel):
    """Filters for listing tracks; every field optional, all given ones must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: TrackStatus | None = None
    kind: TrackKind | None = None
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    prompt_contains: str | None = Field(default=None, min_length=1, max_length=500)
    bpm_min: float | None = Field(default=None, ge=0, le=1000)
    bpm_max: float | None = Field(default=None, ge=0, le=1000)
    key: str | None = Field(default=None, pattern=r"^[A-G][#b]?$")
    mode: Mode | None = None
    lufs_min: float | None = Field(default=None, ge=-200, le=20)
    lufs_max: float | None = Field(default=None, ge=-200, le=20)
    engine: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=10_000)
    cursor: str | None = None

    @field_validator("created_from", "created_to")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("dates must carry a timezone (use UTC, e.g. 2026-11-22T00:00:00Z)")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> TrackQuery:
        for lo, hi, name in ((self.bpm_min, self.bpm_max, "bpm"),
                             (self.lufs_min, self.lufs_max, "lufs"),
                             (self.created_from, self.created_to, "created")):
            if lo is not None and hi is not None and lo > hi:  # type: ignore[operator]
                raise ValueError(f"{name}_min {lo} is over {name}_max {hi}: the range is "
                                 "empty")
        if self.cursor is not None:
            decode_cursor(self.cursor)
        return self


class TrackPage(BaseModel):
    """One page of tracks and the cursor of the next page (None on the last page)."""

    items: list[Sidecar]
    next_cursor: str | None = None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The last id a cursor points after; InvalidRequestError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None
    if not raw.startswith(_CURSOR_PREFIX):
        raise _bad_cursor()
    try:
        return validate_id(raw[len(_CURSOR_PREFIX):])
    except InvalidKeyError:
        raise _bad_cursor() from None


def _bad_cursor() -> InvalidRequestError:
    return InvalidRequestError("cursor: not a cursor this API returned (pass a page's "
                               "next_cursor unchanged)", code="invalid_cursor")


def where_clause(q: TrackQuery) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or "") and its parameters; values are always bound, never spliced."""
    conds: list[str] = []
    params: list[Any] = []

    def add(sql: str, value: Any) -> None:
        conds.append(sql)
        params.append(value)

    if q.status is not None:
        add("status = ?", q.status)
    if q.kind is not None:
        add("kind = ?", q.kind)
    if q.created_from is not None:
        add("created_at >= ?", naive_utc(q.created_from))
    if q.created_to is not None:
        add("created_at < ?", naive_utc(q.created_to))
    if q.prompt_contains is not None:
        add("strpos(lower(prompt), lower(?)) > 0", q.prompt_contains)
    if q.bpm_min is not None:
        add("bpm >= ?", q.bpm_min)
    if q.bpm_max is not None:
        add("bpm <= ?", q.bpm_max)
    if q.key is not None:
        add("musical_key = ?", q.key)
    if q.mode is not None:
        add("mode = ?", q.mode)
    if q.lufs_min is not None:
        add("lufs >= ?", q.lufs_min)
    if q.lufs_max is not None:
        add("lufs <= ?", q.lufs_max)
    if q.engine is not None:
        add("engine = ?", q.engine)
    if q.cursor is not None:
        add("id < ?", decode_cursor(q.cursor))
    return (f"WHERE {' AND '.join(conds)}" if conds else ""), params
