"""Reading merchants for bank staff: a search by name, category or city (the console's partner list)."""

from __future__ import annotations

from typing import Any

import asyncpg

from perks.core.pagination import time_id_after
from perks.merchants.service import merchant_view

# A substring search over a few thousand partners: a sequential scan is fine at this size.
SEARCH_MERCHANTS = """
SELECT id, name, category, city, contact_phone, status, created_at, updated_at FROM merchants
WHERE ($1::text IS NULL OR strpos(lower(name), lower($1)) > 0 OR strpos(lower(category), lower($1)) > 0
       OR strpos(lower(coalesce(city, '')), lower($1)) > 0)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
ORDER BY created_at, id LIMIT $5
"""


async def search_merchants(
    conn: asyncpg.Connection, text: str | None, status: str | None, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """Merchants whose name, category or city contains ``text`` (any case), of one ``status`` or all, oldest first."""
    created_at, last_id = time_id_after(after)
    rows = await conn.fetch(SEARCH_MERCHANTS, text or None, status, created_at, last_id, limit)
    return [merchant_view(row) for row in rows]
