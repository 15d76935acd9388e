"""Idempotency keys: a redemption request's first outcome, kept per merchant for 24 hours and replayed.

The key is claimed, and its outcome kept, by ``perks_redeem`` in the redemption's own round trip; here are the
request's fingerprint, the header's check and the purge of keys past the window."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Mapping

import asyncpg

from perks.core.errors import ApiError, BadRequest

IDEMPOTENCY_WINDOW = timedelta(hours=24)
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


class KeyReused(ApiError):
    """The key was first used with another request."""

    status, code = 422, "idempotency_key_reused"


def request_fingerprint(method: str, path: str, body: Mapping[str, Any]) -> bytes:
    """SHA-256 of the method, the path and the body in canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).digest()


PURGE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at <= $1"


async def purge_expired(conn: asyncpg.Connection, now: datetime) -> int:
    """Delete the keys past the replay window; how many went (for a periodic job)."""
    result = await conn.execute(PURGE_EXPIRED, now - IDEMPOTENCY_WINDOW)
    return int(result.split()[-1])


def check_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header's value, or 400 when it is not 1 to 255 characters."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise BadRequest({KEY_HEADER: f"must be 1 to {MAX_KEY_LENGTH} characters"})
    return value
