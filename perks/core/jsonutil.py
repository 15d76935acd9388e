"""JSON encoding for responses: UUIDs and dates as strings, times in RFC 3339 with offset (orjson, in C)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from aiohttp import web

# orjson writes datetimes, dates and UUIDs itself, exactly as ``isoformat()`` and ``str()`` do (microseconds only
# when there are some, the offset as +HH:MM); keys that are not strings (an int) become strings, as in json.
OPTIONS = orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    # asyncpg's own UUID subclass, which orjson does not take for a UUID.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return orjson.dumps(value, default=_default, option=OPTIONS)


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 characters kept as they are."""
    return orjson.dumps(value, default=_default, option=OPTIONS).decode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (``application/json; charset=utf-8``)."""
    return web.Response(body=dumps_bytes(data), status=status, headers=headers, content_type="application/json",
                        charset="utf-8")
