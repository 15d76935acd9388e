"""Voiding a redemption: the quota and capacity come back, the voucher stays spent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal, ensure_merchant_scope
from perks.core.errors import ApiError, Forbidden, NotFound
from perks.redemption import counters
from perks.redemption.queries import redemption_view

# How long a merchant's manager may take back its own redemption; the bank's staff may at any time.
VOID_WINDOW = timedelta(hours=24)
BANK_VOIDERS = frozenset({"admin", "operator", "system"})

# The redemption's row is locked first, then its counters in the order redeeming takes them.
SELECT_FOR_VOID = """
SELECT r.id, r.status, r.voucher_id, r.client_id, r.perk_code, r.tier_code, c.name AS client_name,
       r.merchant_id, r.store_id, r.redeemed_at, r.voided_at, r.void_reason, r.quota_year, r.quota_month
FROM redemptions r JOIN clients c ON c.id = r.client_id
WHERE r.id = $1
FOR UPDATE OF r
"""
MARK_VOIDED = """
UPDATE redemptions SET status = 'voided', voided_at = $2, voided_by = $3, void_reason = $4
WHERE id = $1
"""


async def void(
    conn: asyncpg.Connection,
    actor: Principal,
    redemption_id: UUID,
    reason: str,
    now: datetime,
    *,
    as_bank: bool,
) -> dict[str, Any]:
    """Void a redemption at ``now``: as the bank (admin, operator) any time, else as its merchant's manager
    within 24 hours. Gives back the client's quota and cap and the merchant's capacity; audited."""
    if (as_bank and actor.role not in BANK_VOIDERS) or (not as_bank and actor.role != "manager"):
        raise Forbidden()
    async with conn.transaction(isolation=counters.ISOLATION):
        row = await conn.fetchrow(SELECT_FOR_VOID, redemption_id)
        if row is None:
            raise NotFound()
        if not as_bank:
            ensure_merchant_scope(actor, row["merchant_id"])
        if row["status"] == "voided":
            raise ApiError("already_voided", status=409)
        if not as_bank and now - row["redeemed_at"] > VOID_WINDOW:
            raise ApiError("void_window_closed", status=409)
        voided_by = UUID(actor.id) if actor.role != "system" and actor.id else None
        await conn.execute(MARK_VOIDED, redemption_id, now, voided_by, reason)
        await counters.give_back(conn, row)
        before = redemption_view(row)
        after = before | {"status": "voided", "voided_at": now, "void_reason": reason}
        await audit.record(conn, actor, "redemption.void", "redemption", redemption_id, before, after)
    return after
