"""Reading redemptions for bank staff: every merchant's, filtered by merchant, perk and time, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from perks.core.pagination import decode_cursor, page, time_id_after
from perks.redemption.queries import redemption_key, redemption_view

SELECT_REDEMPTIONS = """
SELECT r.id, r.status, r.voucher_id, r.perk_code, r.tier_code, c.name AS client_name,
       r.merchant_id, r.store_id, r.redeemed_at, r.voided_at, r.void_reason
FROM redemptions r JOIN clients c ON c.id = r.client_id
WHERE ($1::uuid IS NULL OR r.merchant_id = $1)
  AND ($2::text IS NULL OR r.perk_code = $2)
  AND ($3::timestamptz IS NULL OR r.redeemed_at >= $3)
  AND ($4::timestamptz IS NULL OR r.redeemed_at < $4)
  AND ($5::timestamptz IS NULL OR r.redeemed_at < $5 OR (r.redeemed_at = $5 AND r.id > $6::uuid))
ORDER BY r.redeemed_at DESC, r.id
LIMIT $7
"""


async def list_redemptions(
    conn: asyncpg.Connection,
    *,
    merchant_id: UUID | None,
    perk: str | None,
    at_from: datetime | None,
    at_to: datetime | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """``{items, next_cursor}``: redemptions of any merchant (or one), of a perk (or all), in ``[at_from, at_to)``."""
    after_at, after_id = time_id_after(decode_cursor(cursor, 2))
    rows = await conn.fetch(SELECT_REDEMPTIONS, merchant_id, perk, at_from, at_to, after_at, after_id, limit + 1)
    return page([redemption_view(row) for row in rows], limit, redemption_key)
