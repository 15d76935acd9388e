"""The invariants a fault run checks, in plain SQL over the tables: what clients were told matches the database,
and no limit is exceeded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fault_support import Figures


# The invariants, in plain SQL over the tables. The merchant counter is summed per (merchant, perk, year), so that
# a counter split into slot rows (or a view in its place) is checked the same way: point MERCHANT_USAGE at it.
MERCHANT_USAGE = "merchant_yearly_usage"
COUNTER_MISMATCHES = """
WITH live AS (SELECT * FROM redemptions WHERE status = 'redeemed'),
client_yearly AS (
    SELECT 'client_yearly' AS counter, coalesce(u.client_id, r.client_id)::text AS owner, coalesce(u.used, 0) AS used,
           coalesce(r.n, 0) AS redemptions
    FROM client_yearly_usage u
    FULL JOIN (SELECT client_id, perk_code, quota_year, count(*) AS n FROM live GROUP BY 1, 2, 3) r
      ON (r.client_id, r.perk_code, r.quota_year) = (u.client_id, u.perk_code, u.year)),
client_monthly AS (
    SELECT 'client_monthly', coalesce(u.client_id, r.client_id)::text, coalesce(u.used, 0), coalesce(r.n, 0)
    FROM client_monthly_usage u
    FULL JOIN (SELECT client_id, perk_code, quota_year, quota_month, count(*) AS n FROM live GROUP BY 1, 2, 3, 4) r
      ON (r.client_id, r.perk_code, r.quota_year, r.quota_month) = (u.client_id, u.perk_code, u.year, u.month)),
merchant_yearly AS (
    SELECT 'merchant_yearly', coalesce(u.merchant_id, r.merchant_id)::text, coalesce(u.used, 0), coalesce(r.n, 0)
    FROM (SELECT merchant_id, perk_code, year, sum(used) AS used FROM {merchant_usage} GROUP BY 1, 2, 3) u
    FULL JOIN (SELECT merchant_id, perk_code, quota_year, count(*) AS n FROM live GROUP BY 1, 2, 3) r
      ON (r.merchant_id, r.perk_code, r.quota_year) = (u.merchant_id, u.perk_code, u.year))
SELECT * FROM (SELECT * FROM client_yearly UNION ALL SELECT * FROM client_monthly UNION ALL SELECT * FROM merchant_yearly) c
WHERE used <> redemptions
""".format(merchant_usage=MERCHANT_USAGE)
OVER_LIMITS = """
SELECT 'yearly_quota' AS limit_name, u.client_id::text AS owner, u.used, e.yearly_quota AS allowed
FROM client_yearly_usage u JOIN clients c ON c.id = u.client_id
JOIN entitlements e ON (e.tier_code, e.perk_code) = (c.tier_code, u.perk_code)
WHERE e.yearly_quota IS NOT NULL AND u.used > e.yearly_quota
UNION ALL
SELECT 'monthly_cap', u.client_id::text, u.used, e.monthly_cap
FROM client_monthly_usage u JOIN clients c ON c.id = u.client_id
JOIN entitlements e ON (e.tier_code, e.perk_code) = (c.tier_code, u.perk_code)
WHERE e.monthly_cap IS NOT NULL AND u.used > e.monthly_cap
UNION ALL
SELECT 'merchant_capacity', u.merchant_id::text, u.used, a.yearly_capacity
FROM (SELECT merchant_id, perk_code, year, sum(used) AS used FROM {merchant_usage} GROUP BY 1, 2, 3) u
JOIN agreements a ON (a.merchant_id, a.perk_code) = (u.merchant_id, u.perk_code)
WHERE a.yearly_capacity IS NOT NULL AND u.used > a.yearly_capacity
""".format(merchant_usage=MERCHANT_USAGE)
TWICE_REDEEMED = "SELECT voucher_id FROM redemptions GROUP BY voucher_id HAVING count(*) > 1"
KNOWN_REDEMPTIONS = "SELECT id::text, voucher_id FROM redemptions WHERE id = ANY($1::uuid[])"


async def broken_invariants(conn: Any, figures: Figures) -> list[str]:
    """Every way the database disagrees with what clients were told, or with the limits (empty: all held)."""
    problems = [f"counter differs: {dict(row)}" for row in await conn.fetch(COUNTER_MISMATCHES)]
    problems += [f"over its limit: {dict(row)}" for row in await conn.fetch(OVER_LIMITS)]
    problems += [f"redeemed twice: {row['voucher_id']}" for row in await conn.fetch(TWICE_REDEEMED)]
    stored = {row["id"]: row["voucher_id"] for row in await conn.fetch(KNOWN_REDEMPTIONS, list(figures.redeemed))}
    problems += [f"acknowledged (201) but not in the database: {rid}" for rid in figures.redeemed if rid not in stored]
    problems += [f"201 for another voucher: {rid}" for rid, vid in figures.redeemed.items() if stored.get(rid, vid) != vid]
    problems += [f"voucher {vid} acknowledged as {len(ids)} redemptions"
                 for vid, ids in figures.voucher_ids_by_redemption.items() if len(ids) > 1]
    for key, answers in figures.keyed_answers.items():
        if len({(status, json.dumps(body, sort_keys=True)) for status, body in answers}) > 1:
            problems.append(f"Idempotency-Key {key} answered differently: {[a[0] for a in answers]}")
    return problems
