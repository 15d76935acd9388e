"""Keyset pagination: ``?limit=&cursor=`` in, ``{items, next_cursor}`` out."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Sequence
from uuid import UUID

from pydantic import Field

from perks.core.errors import BadRequest
from perks.core.validation import Query


class PageQuery(Query):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=500)


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor holding the sort key of the last item returned."""
    raw = json.dumps([v if isinstance(v, (int, str)) or v is None else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    """The sort key inside ``cursor``, or 400 when it is not one of ours."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest({"cursor": "not a valid cursor"}) from None
    if not isinstance(values, list) or len(values) != size:
        raise BadRequest({"cursor": "not a valid cursor"})
    return values


def page(rows: Sequence[Any], limit: int, key: Any) -> dict[str, Any]:
    """``{items, next_cursor}`` from ``limit + 1`` fetched rows; ``key(row)`` gives a row's sort key."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return {"items": items, "next_cursor": next_cursor}


def time_id_after(after: list[Any] | None) -> tuple[datetime | None, UUID | None]:
    """The ``(created_at, id)`` key of a decoded cursor, for lists ordered oldest first."""
    if after is None:
        return None, None
    try:
        return datetime.fromisoformat(after[0]), UUID(after[1])
    except (TypeError, ValueError):
        raise BadRequest({"cursor": "not a valid cursor"}) from None


def time_id_key(row: Any) -> list[Any]:
    """The cursor key of a row ordered by ``(created_at, id)``."""
    return [row["created_at"].isoformat(), str(row["id"])]
