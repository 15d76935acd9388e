"""The counters' invariant, for tests, the benchmark and an operator: every counter equals what it counts, and
nothing is above its limit."""

from __future__ import annotations

from typing import Any

import asyncpg

# Each counter against the redemptions (not voided) it counts, both ways: a redemption without its counter row
# is a mismatch too. Tier counters count the redemptions that drew on no grant; a grant counts its own; the
# merchant's slots (summed by the view) count them all.
SELECT_MISMATCHED_COUNTERS = """
WITH live AS (SELECT * FROM redemptions WHERE status = 'redeemed'),
tier AS (SELECT * FROM live WHERE grant_id IS NULL)
SELECT 'client_yearly' AS counter, client_id::text AS owner, perk_code, year, NULL::integer AS month,
       COALESCE(u.used, 0) AS used, COALESCE(n.count, 0) AS redemptions
FROM client_yearly_usage u
FULL JOIN (SELECT client_id, perk_code, quota_year AS year, count(*) FROM tier GROUP BY 1, 2, 3) n
     USING (client_id, perk_code, year)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
UNION ALL
SELECT 'client_monthly', client_id::text, perk_code, year, month, COALESCE(u.used, 0), COALESCE(n.count, 0)
FROM client_monthly_usage u
FULL JOIN (SELECT client_id, perk_code, quota_year AS year, quota_month AS month, count(*) FROM tier
           GROUP BY 1, 2, 3, 4) n
     USING (client_id, perk_code, year, month)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
UNION ALL
SELECT 'merchant_yearly', merchant_id::text, perk_code, year, NULL, COALESCE(u.used, 0), COALESCE(n.count, 0)
FROM merchant_yearly_usage u
FULL JOIN (SELECT merchant_id, perk_code, quota_year AS year, count(*) FROM live GROUP BY 1, 2, 3) n
     USING (merchant_id, perk_code, year)
WHERE COALESCE(u.used, 0) <> COALESCE(n.count, 0)
UNION ALL
SELECT 'grant', g.id::text, g.perk_code, NULL, NULL, g.used, COALESCE(n.count, 0)
FROM grants g
LEFT JOIN (SELECT grant_id, count(*) FROM live WHERE grant_id IS NOT NULL GROUP BY 1) n ON n.grant_id = g.id
WHERE g.used <> COALESCE(n.count, 0)
"""

# Limits as they stand now. A limit lowered after use (a tier change, a smaller capacity) is reported too: the
# callers that lower none use this to prove that no load ever passed one.
SELECT_OVER_LIMITS = """
SELECT 'client_yearly' AS counter, u.client_id::text AS owner, u.perk_code, u.year, u.used, e.yearly_quota AS limit
FROM client_yearly_usage u JOIN clients c ON c.id = u.client_id
JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = u.perk_code
WHERE e.yearly_quota IS NOT NULL AND u.used > e.yearly_quota
UNION ALL
SELECT 'client_monthly', u.client_id::text, u.perk_code, u.year, u.used, e.monthly_cap
FROM client_monthly_usage u JOIN clients c ON c.id = u.client_id
JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = u.perk_code
WHERE e.monthly_cap IS NOT NULL AND u.used > e.monthly_cap
UNION ALL
SELECT 'merchant_yearly', u.merchant_id::text, u.perk_code, u.year, u.used, a.yearly_capacity
FROM merchant_yearly_usage u JOIN agreements a ON a.merchant_id = u.merchant_id AND a.perk_code = u.perk_code
WHERE a.yearly_capacity IS NOT NULL AND u.used > a.yearly_capacity
UNION ALL
SELECT 'grant', g.id::text, g.perk_code, NULL, g.used, g.quantity FROM grants g WHERE g.used > g.quantity
"""


async def mismatched_counters(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every counter whose ``used`` differs from the count of its redemptions not voided (none, ever)."""
    return [dict(row) for row in await conn.fetch(SELECT_MISMATCHED_COUNTERS)]


async def over_limits(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every counter above its current limit (none, unless a limit was lowered after use)."""
    return [dict(row) for row in await conn.fetch(SELECT_OVER_LIMITS)]


# The UNIQUE voucher_id makes this impossible; the check says so after every load, without trusting the constraint.
SELECT_TWICE_REDEEMED = "SELECT voucher_id FROM redemptions GROUP BY voucher_id HAVING count(*) > 1"


async def twice_redeemed(conn: asyncpg.Connection) -> list[str]:
    """Every voucher with more than one redemption (none, ever)."""
    return [row["voucher_id"] for row in await conn.fetch(SELECT_TWICE_REDEEMED)]


async def broken_invariants(conn: asyncpg.Connection) -> dict[str, int]:
    """Each invariant that does not hold, named, with how many rows break it; empty when all hold.

    The one check the tests, the benchmark and the fault runs share: counters against their redemptions, counters
    against their limits, and vouchers redeemed more than once."""
    found: dict[str, int] = {}
    for row in await mismatched_counters(conn):
        name = f"{row['counter']} counters off their redemptions"
        found[name] = found.get(name, 0) + 1
    for row in await over_limits(conn):
        name = f"{row['counter']} counters over their limit"
        found[name] = found.get(name, 0) + 1
    twice = await twice_redeemed(conn)
    if twice:
        found["vouchers redeemed more than once"] = len(twice)
    return found
