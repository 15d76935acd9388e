"""Reading redemptions: one, a merchant's list and its count per month, a client's list."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from perks.core.auth import MERCHANT_ROLES, Principal
from perks.core.clock import start_of_day
from perks.core.errors import Forbidden, NotFound
from perks.core.pagination import decode_cursor, page, time_id_after
from perks.redemption.checks import client_view

SELECT_REDEMPTION = """
SELECT r.id, r.status, r.voucher_id, r.client_id, r.perk_code, r.tier_code, c.name AS client_name,
       r.merchant_id, r.store_id, r.redeemed_at, r.voided_at, r.void_reason, r.quota_year, r.quota_month
FROM redemptions r JOIN clients c ON c.id = r.client_id
WHERE r.id = $1
"""


def redemption_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A redemption as merchants and bank staff see it (the client's name masked)."""
    return {
        "id": row["id"],
        "status": row["status"],
        "voucher_id": row["voucher_id"],
        "perk": row["perk_code"],
        "client": client_view(row["client_name"], row["tier_code"]),
        "merchant_id": row["merchant_id"],
        "store_id": row["store_id"],
        "redeemed_at": row["redeemed_at"],
        "voided_at": row["voided_at"],
        "void_reason": row["void_reason"],
    }


async def get_redemption(conn: asyncpg.Connection, actor: Principal, redemption_id: UUID) -> dict[str, Any]:
    """One redemption: bank staff see any, a manager its merchant's, a cashier its store's; else 404."""
    row = await conn.fetchrow(SELECT_REDEMPTION, redemption_id)
    if row is None or not _may_see(actor, row):
        raise NotFound()
    return redemption_view(row)


def _may_see(actor: Principal, row: Mapping[str, Any]) -> bool:
    if actor.is_staff:
        return True
    if actor.role == "manager":
        return actor.merchant_id == str(row["merchant_id"])
    if actor.role == "cashier":
        return actor.store_id == str(row["store_id"])
    return False


def redemption_key(item: Mapping[str, Any]) -> list[Any]:
    """The cursor key of a list ordered newest first: ``(redeemed_at, id)``."""
    return [item["redeemed_at"].isoformat(), str(item["id"])]


# Newest first; ties on the instant broken by id ascending, which the (…, redeemed_at DESC, id) indexes serve.
SELECT_MERCHANT_REDEMPTIONS = """
SELECT r.id, r.status, r.voucher_id, r.perk_code, r.tier_code, c.name AS client_name,
       r.merchant_id, r.store_id, r.redeemed_at, r.voided_at, r.void_reason
FROM redemptions r JOIN clients c ON c.id = r.client_id
WHERE r.merchant_id = $1
  AND ($2::uuid IS NULL OR r.store_id = $2)
  AND ($3::timestamptz IS NULL OR r.redeemed_at >= $3)
  AND ($4::timestamptz IS NULL OR r.redeemed_at < $4)
  AND ($5::timestamptz IS NULL OR r.redeemed_at < $5 OR (r.redeemed_at = $5 AND r.id > $6::uuid))
ORDER BY r.redeemed_at DESC, r.id
LIMIT $7
"""
SELECT_STORE_MERCHANT = "SELECT merchant_id FROM stores WHERE id = $1"


async def list_merchant_redemptions(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    at_from: datetime | None,
    at_to: datetime | None,
    store_id: UUID | None,
    cursor: str | None,
    limit: int,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """``{items, next_cursor}``: a manager's merchant's redemptions (one store's when named), newest first,
    redeemed in ``[at_from, at_to)``; a cashier's own store's of today (bank time zone) only."""
    if actor.role not in MERCHANT_ROLES or not actor.merchant_id:
        raise Forbidden()
    if store_id is not None:
        merchant_id = await conn.fetchval(SELECT_STORE_MERCHANT, store_id)
        if merchant_id is None or str(merchant_id) != actor.merchant_id:
            raise NotFound()
    if actor.role == "cashier":
        if store_id is not None and str(store_id) != actor.store_id:
            raise Forbidden()
        store_id = UUID(actor.store_id) if actor.store_id else None
        today = start_of_day(now, tz)
        at_from = today if at_from is None else max(at_from, today)
    after_at, after_id = time_id_after(decode_cursor(cursor, 2))
    rows = await conn.fetch(
        SELECT_MERCHANT_REDEMPTIONS,
        UUID(actor.merchant_id),
        store_id,
        at_from,
        at_to,
        after_at,
        after_id,
        limit + 1,
    )
    return page([redemption_view(row) for row in rows], limit, redemption_key)


# Redemptions standing (not voided) per quota month: the same count the merchant's capacity is held against.
SELECT_MONTHLY_REDEMPTIONS = """
SELECT quota_month AS month, count(*) AS redeemed
FROM redemptions
WHERE merchant_id = $1 AND quota_year = $2 AND status = 'redeemed'
GROUP BY quota_month
"""


async def monthly_redemptions(conn: asyncpg.Connection, merchant_id: UUID, year: int) -> dict[int, int]:
    """A merchant's redemptions not voided per quota month of ``year``."""
    rows = await conn.fetch(SELECT_MONTHLY_REDEMPTIONS, merchant_id, year)
    return {row["month"]: row["redeemed"] for row in rows}


SELECT_CLIENT_REDEMPTIONS = """
SELECT r.id, r.status, r.voucher_id, r.perk_code, p.name AS perk_name, r.merchant_id, m.name AS merchant_name,
       r.store_id, s.name AS store_name, r.redeemed_at, r.voided_at
FROM redemptions r
JOIN perks p ON p.code = r.perk_code
JOIN merchants m ON m.id = r.merchant_id
JOIN stores s ON s.id = r.store_id
WHERE r.client_id = $1
  AND ($2::timestamptz IS NULL OR r.redeemed_at < $2 OR (r.redeemed_at = $2 AND r.id > $3::uuid))
ORDER BY r.redeemed_at DESC, r.id
LIMIT $4
"""


def client_redemption_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A redemption as its client sees it: where and when, not what the bank pays for it."""
    return {
        "id": row["id"],
        "status": row["status"],
        "voucher_id": row["voucher_id"],
        "perk": row["perk_code"],
        "perk_name": row["perk_name"],
        "merchant_id": row["merchant_id"],
        "merchant_name": row["merchant_name"],
        "store_id": row["store_id"],
        "store_name": row["store_name"],
        "redeemed_at": row["redeemed_at"],
        "voided_at": row["voided_at"],
    }


async def list_client_redemptions(
    conn: asyncpg.Connection, client_id: UUID, *, cursor: str | None, limit: int
) -> dict[str, Any]:
    """``{items, next_cursor}``: a client's own redemptions, newest first."""
    after_at, after_id = time_id_after(decode_cursor(cursor, 2))
    rows = await conn.fetch(SELECT_CLIENT_REDEMPTIONS, client_id, after_at, after_id, limit + 1)
    return page([client_redemption_view(row) for row in rows], limit, redemption_key)
