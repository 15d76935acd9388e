"""Idempotency keys: a redemption request's first outcome, kept per merchant for 24 hours and replayed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.core.errors import ApiError, BadRequest
from perks.core.jsonutil import dumps

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


@dataclass(frozen=True)
class StoredResponse:
    """The first response given for a key."""

    request_hash: bytes
    status: int
    body: dict[str, Any]


# Claim the key with a placeholder (status 0) that the same transaction overwrites before it commits, so no
# one ever reads it. A concurrent claim of the same key blocks on this uncommitted row until the first
# transaction ends, then finds the row taken. A row older than the window is claimed afresh.
CLAIM_KEY = """
INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, status, body, created_at)
VALUES ($1, $2, $3, 0, '{}'::jsonb, $4)
ON CONFLICT (merchant_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status = 0, body = '{}'::jsonb, created_at = EXCLUDED.created_at
    WHERE k.created_at <= $5
RETURNING 1
"""
# ON CONFLICT locked the row above even when it did not update it, so it is there and final.
SELECT_STORED = """
SELECT request_hash, status, body::text AS body FROM idempotency_keys WHERE merchant_id = $1 AND key = $2
"""
RECORD_RESPONSE = """
UPDATE idempotency_keys SET status = $3, body = $4::text::jsonb WHERE merchant_id = $1 AND key = $2
"""
PURGE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at <= $1"


async def claim(
    conn: asyncpg.Connection, merchant_id: UUID, key: str, request_hash: bytes, now: datetime
) -> StoredResponse | None:
    """Take ``key`` for this request (``None``), or the response already given for it within the window.

    Call it inside the transaction that will :func:`record` the response."""
    claimed = await conn.fetchval(CLAIM_KEY, merchant_id, key, request_hash, now, now - IDEMPOTENCY_WINDOW)
    if claimed is not None:
        return None
    row = await conn.fetchrow(SELECT_STORED, merchant_id, key)
    return StoredResponse(bytes(row["request_hash"]), row["status"], json.loads(row["body"]))


async def record(conn: asyncpg.Connection, merchant_id: UUID, key: str, status: int, body: Mapping[str, Any]) -> None:
    """Keep the response to replay for ``key``; in the transaction that claimed it."""
    # Stored as text so that what is replayed is exactly what the API serialises, whatever the connection's codecs.
    await conn.execute(RECORD_RESPONSE, merchant_id, key, status, dumps(body))


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
