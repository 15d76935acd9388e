"""The redemption row and the three counters it moves, decided by the database alone.

Every counter moves by one conditional statement: PostgreSQL locks the row, re-reads the latest ``used`` and
applies the limit to it, so concurrent redemptions queue on the row and none overshoots. Rows are always taken
in one order -- client yearly, client monthly, merchant yearly -- by redeeming and voiding alike, so two
transactions never wait on each other in a circle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import Refusal

# The conditional updates rely on READ COMMITTED: a statement that waited for a row lock re-reads the row's
# latest version. Redeeming and voiding pin it, so a server defaulting to another level cannot turn races into errors.
ISOLATION = "read_committed"

INSERT_REDEMPTION = """
INSERT INTO redemptions (voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by, tier_code,
                         redeemed_at, quota_year, quota_month, unit_price_fen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id
"""


async def insert_redemption(
    conn: asyncpg.Connection,
    facts: Mapping[str, Any],
    merchant_id: UUID,
    store_id: UUID,
    redeemed_by: UUID,
    now: datetime,
    year: int,
    month: int,
) -> UUID:
    """Insert the voucher's one redemption; a concurrent or earlier one makes it ``voucher_already_redeemed``."""
    try:
        return await conn.fetchval(
            INSERT_REDEMPTION,
            facts["voucher_id"],
            facts["client_id"],
            facts["perk_code"],
            merchant_id,
            store_id,
            redeemed_by,
            facts["tier_code"],
            now,
            year,
            month,
            facts["unit_price_fen"],
        )
    except asyncpg.UniqueViolationError as exc:
        # The UNIQUE voucher_id is the single-use guarantee: a racing redemption waits here for the first
        # to commit, then fails.
        if exc.constraint_name == "redemptions_voucher_id_key":
            raise Refusal("voucher_already_redeemed") from None
        raise


# One statement per counter: create the row at one use when the limit allows a first use, or add one to it
# while below the limit. ``$4`` NULL is unlimited, still counted. No row back means the limit refused.
TAKE_CLIENT_YEARLY = """
INSERT INTO client_yearly_usage AS u (client_id, perk_code, year, used)
SELECT $1, $2, $3, 1 WHERE $4::integer IS NULL OR $4::integer > 0
ON CONFLICT (client_id, perk_code, year)
DO UPDATE SET used = u.used + 1 WHERE $4::integer IS NULL OR u.used < $4::integer
RETURNING used
"""
TAKE_CLIENT_MONTHLY = """
INSERT INTO client_monthly_usage AS u (client_id, perk_code, year, month, used)
SELECT $1, $2, $3, $4, 1 WHERE $5::integer IS NULL OR $5::integer > 0
ON CONFLICT (client_id, perk_code, year, month)
DO UPDATE SET used = u.used + 1 WHERE $5::integer IS NULL OR u.used < $5::integer
RETURNING used
"""
TAKE_MERCHANT_YEARLY = """
INSERT INTO merchant_yearly_usage AS u (merchant_id, perk_code, year, used)
SELECT $1, $2, $3, 1 WHERE $4::integer IS NULL OR $4::integer > 0
ON CONFLICT (merchant_id, perk_code, year)
DO UPDATE SET used = u.used + 1 WHERE $4::integer IS NULL OR u.used < $4::integer
RETURNING used
"""


async def take(
    conn: asyncpg.Connection, facts: Mapping[str, Any], merchant_id: UUID, year: int, month: int
) -> tuple[int, int]:
    """Use one of the client's yearly quota, monthly cap and the merchant's capacity; ``(client used, merchant
    used)`` afterwards. Raises the refusal of the first limit reached; the caller's transaction rolls back."""
    client_id, perk = facts["client_id"], facts["perk_code"]
    used = await conn.fetchval(TAKE_CLIENT_YEARLY, client_id, perk, year, facts["yearly_quota"])
    if used is None:
        raise Refusal("quota_exhausted")
    if await conn.fetchval(TAKE_CLIENT_MONTHLY, client_id, perk, year, month, facts["monthly_cap"]) is None:
        raise Refusal("monthly_cap_reached")
    merchant_used = await conn.fetchval(TAKE_MERCHANT_YEARLY, merchant_id, perk, year, facts["yearly_capacity"])
    if merchant_used is None:
        raise Refusal("merchant_capacity_exhausted")
    return used, merchant_used


GIVE_BACK_CLIENT_YEARLY = """
UPDATE client_yearly_usage SET used = used - 1
WHERE client_id = $1 AND perk_code = $2 AND year = $3
RETURNING used
"""
GIVE_BACK_CLIENT_MONTHLY = """
UPDATE client_monthly_usage SET used = used - 1
WHERE client_id = $1 AND perk_code = $2 AND year = $3 AND month = $4
RETURNING used
"""
GIVE_BACK_MERCHANT_YEARLY = """
UPDATE merchant_yearly_usage SET used = used - 1
WHERE merchant_id = $1 AND perk_code = $2 AND year = $3
RETURNING used
"""


class CounterMissing(RuntimeError):
    """A redemption's counter row is absent: the counters no longer match the redemptions."""


async def give_back(conn: asyncpg.Connection, redemption: Mapping[str, Any]) -> None:
    """Return one use to the three counters of the redemption's own quota year and month."""
    client_id, perk = redemption["client_id"], redemption["perk_code"]
    year, month = redemption["quota_year"], redemption["quota_month"]
    statements = (
        (GIVE_BACK_CLIENT_YEARLY, (client_id, perk, year)),
        (GIVE_BACK_CLIENT_MONTHLY, (client_id, perk, year, month)),
        (GIVE_BACK_MERCHANT_YEARLY, (redemption["merchant_id"], perk, year)),
    )
    for statement, args in statements:
        # The CHECK (used >= 0) makes an impossible give-back fail loudly instead of going negative.
        if await conn.fetchval(statement, *args) is None:
            raise CounterMissing(f"no counter row for redemption {redemption['id']}")


def remaining(limit: int | None, used: int) -> int | None:
    """Uses left under ``limit`` (``None``: unlimited), never below zero."""
    return None if limit is None else max(limit - used, 0)


async def audit_redemption(
    conn: asyncpg.Connection,
    actor: Principal,
    redemption_id: UUID,
    facts: Mapping[str, Any],
    merchant_id: UUID,
    store_id: UUID,
    now: datetime,
    year: int,
    month: int,
) -> None:
    """Record the redemption in the audit log, inside its transaction (no personal data beyond the client's id)."""
    after = {
        "id": redemption_id,
        "status": "redeemed",
        "voucher_id": facts["voucher_id"],
        "client_id": facts["client_id"],
        "perk": facts["perk_code"],
        "tier": facts["tier_code"],
        "merchant_id": merchant_id,
        "store_id": store_id,
        "redeemed_at": now,
        "quota_year": year,
        "quota_month": month,
        "unit_price_fen": facts["unit_price_fen"],
    }
    await audit.record(conn, actor, "redemption.create", "redemption", redemption_id, None, after)


# Each counter row against the redemptions it counts, both ways: a redemption without its counter row is a
# mismatch too. The contract's invariant is that this finds nothing, whatever the load.
SELECT_MISMATCHED_COUNTERS = """
WITH live AS (SELECT * FROM redemptions WHERE status = 'redeemed')
SELECT 'client_yearly' AS counter, client_id::text AS owner, perk_code, year, NULL::integer AS month,
       COALESCE(u.used, 0) AS used, COALESCE(n.count, 0) AS redemptions
FROM client_yearly_usage u
FULL JOIN (SELECT client_id, perk_code, quota_year AS year, count(*) FROM live GROUP BY 1, 2, 3) n
     USING (client_id, perk_code, year)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
UNION ALL
SELECT 'client_monthly', client_id::text, perk_code, year, month, COALESCE(u.used, 0), COALESCE(n.count, 0)
FROM client_monthly_usage u
FULL JOIN (SELECT client_id, perk_code, quota_year AS year, quota_month AS month, count(*) FROM live
           GROUP BY 1, 2, 3, 4) n
     USING (client_id, perk_code, year, month)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
UNION ALL
SELECT 'merchant_yearly', merchant_id::text, perk_code, year, NULL, COALESCE(u.used, 0), COALESCE(n.count, 0)
FROM merchant_yearly_usage u
FULL JOIN (SELECT merchant_id, perk_code, quota_year AS year, count(*) FROM live GROUP BY 1, 2, 3) n
     USING (merchant_id, perk_code, year)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
"""


async def mismatched_counters(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every usage counter whose ``used`` differs from the count of its redemptions not voided (none, ever)."""
    return [dict(row) for row in await conn.fetch(SELECT_MISMATCHED_COUNTERS)]
