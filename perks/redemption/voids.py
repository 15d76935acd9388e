"""Voiding a redemption: the use comes back where it was taken, the voucher stays spent.

Decided in one round trip by the server-side function ``perks_void`` (migration 0009): the redemption's row is
locked, the rules below applied, the use given back (to its grant, or to the tier's yearly and monthly counters)
with one unit of the merchant's capacity, and the audit entry and the ``redemption.voided`` event written.

- The bank (admin, operator, the command line) may void any redemption at any time.
- A merchant's manager may void its own merchant's redemptions within 24 hours, unless the merchant is
  suspended (403 ``merchant_suspended``): a suspended partner can no longer give itself capacity back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from perks.core.auth import BANK_WRITERS_AND_SYSTEM, Principal
from perks.core.errors import ApiError, Forbidden, NotFound

# How long a merchant's manager may take back its own redemption; the bank's staff may at any time.
VOID_WINDOW = timedelta(hours=24)

VOID = "SELECT code, body FROM perks_void($1, $2, $3, $4, $5, $6, $7, $8, $9)"
ERRORS = {
    "not_found": lambda: NotFound(),
    "merchant_suspended": lambda: ApiError("merchant_suspended", status=403),
    "already_voided": lambda: ApiError("already_voided", status=409),
    "void_window_closed": lambda: ApiError("void_window_closed", status=409),
}


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
    within 24 hours and while the merchant is active. Gives the use and the capacity back; audited."""
    if (as_bank and actor.role not in BANK_WRITERS_AND_SYSTEM) or (not as_bank and actor.role != "manager"):
        raise Forbidden()
    row = await conn.fetchrow(
        VOID,
        redemption_id,
        UUID(actor.id) if actor.id else None,
        actor.username or f"{actor.role}:{actor.id}",
        actor.role,
        UUID(actor.merchant_id) if actor.merchant_id else None,
        as_bank,
        reason,
        now,
        VOID_WINDOW,
    )
    if row["code"] is not None:
        raise ERRORS[row["code"]]()
    return row["body"]
