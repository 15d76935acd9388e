"""Finding clients for bank staff: by external reference, the tail of a phone number, or a part of the name."""

from __future__ import annotations

from typing import Any

import asyncpg

from perks.clients.service import client_view
from perks.core.pagination import time_id_after

# $1 exact reference, $2 phone tail (digits), $3 part of the name; oldest first, keyset on (created_at, id).
SEARCH_CLIENTS = """
SELECT id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at, tier_override_until, tags
FROM clients
WHERE (external_ref = $1 OR ($2::text IS NOT NULL AND phone LIKE '%' || $2)
       OR ($3::text IS NOT NULL AND strpos(name, $3) > 0))
  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
ORDER BY created_at, id LIMIT $6
"""


async def search_clients(
    conn: asyncpg.Connection, text: str, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """Clients whose external reference is ``text``, whose phone ends with it (4+ digits) or whose name holds it."""
    text = text.strip()
    digits = text if text.isdigit() and len(text) >= 4 else None
    created_at, last_id = time_id_after(after)
    rows = await conn.fetch(SEARCH_CLIENTS, text, digits, text or None, created_at, last_id, limit)
    return [client_view(row) for row in rows]
