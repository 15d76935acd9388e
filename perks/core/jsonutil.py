"""JSON encoding for responses: UUIDs and dates as strings, times in RFC 3339 with offset."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from uuid import UUID

from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, UUID)):
        return str(value) if isinstance(value, UUID) else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 characters kept as they are."""
    return json.dumps(value, ensure_ascii=False, default=_default, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with :func:`dumps`."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)
