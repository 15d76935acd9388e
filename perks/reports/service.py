"""The bank's reports of a quota year: usage per merchant, perk and month; capacity use; quota use by tier.

Each is one set-based query over the year's rows (the capacity and quota reports read the usage counters, which
always equal the redemptions not voided), returned as ``{year, items}`` with flat items that CSV writes as is.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from perks.feedback.service import merchant_ratings
from perks.settlement.periods import Month

SELECT_USAGE = """
WITH usage AS (
    SELECT merchant_id, perk_code, quota_month,
           count(*) FILTER (WHERE status = 'redeemed') AS redeemed,
           count(*) FILTER (WHERE status = 'voided') AS voided,
           COALESCE(sum(unit_price_fen) FILTER (WHERE status = 'redeemed'), 0)::bigint AS amount_fen
    FROM redemptions
    WHERE quota_year = $1
    GROUP BY merchant_id, perk_code, quota_month
)
SELECT u.merchant_id, m.name AS merchant_name, u.perk_code, u.quota_month, u.redeemed, u.voided, u.amount_fen
FROM usage u JOIN merchants m ON m.id = u.merchant_id
ORDER BY m.name, u.merchant_id, u.perk_code, u.quota_month
"""
# In CSV the month is a year and a month number: a spreadsheet turns a cell like `2026-05` into a date.
USAGE_CSV_COLUMNS = ("merchant_id", "merchant_name", "perk", "year", "month", "redeemed", "voided", "amount_fen")


def usage_csv_row(item: dict[str, Any]) -> list[Any]:
    """A usage item as a CSV row of ``USAGE_CSV_COLUMNS``."""
    year, month = (int(part) for part in item["month"].split("-"))
    return [item["merchant_id"], item["merchant_name"], item["perk"], year, month, item["redeemed"],
            item["voided"], item["amount_fen"]]


async def usage_report(conn: asyncpg.Connection, year: int) -> dict[str, Any]:
    """Redemptions per merchant, perk and quota month of ``year``: standing, voided, and what standing ones cost."""
    rows = await conn.fetch(SELECT_USAGE, year)
    items = [
        {
            "merchant_id": str(row["merchant_id"]),
            "merchant_name": row["merchant_name"],
            "perk": row["perk_code"],
            "month": str(Month(year, row["quota_month"])),
            "redeemed": row["redeemed"],
            "voided": row["voided"],
            "amount_fen": int(row["amount_fen"]),
        }
        for row in rows
    ]
    return {"year": year, "items": items}


SELECT_CAPACITY = """
SELECT a.merchant_id, m.name AS merchant_name, a.perk_code, a.yearly_capacity, a.unit_price_fen,
       COALESCE(u.used, 0) AS used
FROM agreements a
JOIN merchants m ON m.id = a.merchant_id
LEFT JOIN merchant_yearly_usage u ON u.merchant_id = a.merchant_id AND u.perk_code = a.perk_code AND u.year = $1
ORDER BY m.name, a.merchant_id, a.perk_code
"""
CAPACITY_COLUMNS = (
    "merchant_id", "merchant_name", "perk", "yearly_capacity", "used", "remaining", "used_pct", "unit_price_fen",
    "rating_average", "rating_count",
)


def percent(part: int, whole: int | None) -> float | None:
    """``part`` as a percentage of ``whole`` to one decimal; ``None`` when there is no whole to speak of."""
    if not whole:
        return None
    return round(100 * part / whole, 1)


async def capacity_report(conn: asyncpg.Connection, year: int) -> dict[str, Any]:
    """Each merchant's use of each agreed perk's yearly capacity in ``year``, with the merchant's rating."""
    rows = await conn.fetch(SELECT_CAPACITY, year)
    ratings = await merchant_ratings(conn)
    unrated = {"average": None, "count": 0}
    items = []
    for row in rows:
        capacity, used = row["yearly_capacity"], row["used"]
        rating = ratings.get(row["merchant_id"], unrated)
        items.append(
            {
                "merchant_id": str(row["merchant_id"]),
                "merchant_name": row["merchant_name"],
                "perk": row["perk_code"],
                "yearly_capacity": capacity,
                "used": used,
                "remaining": None if capacity is None else max(capacity - used, 0),
                "used_pct": percent(used, capacity),
                "unit_price_fen": row["unit_price_fen"],
                "rating_average": rating["average"],
                "rating_count": rating["count"],
            }
        )
    return {"year": year, "items": items}


# Clients are counted in their tier of now; so is their use of the year. `promised` is quota times clients.
SELECT_QUOTA_USE = """
WITH members AS (
    SELECT tier_code, count(*) AS clients FROM clients WHERE tier_code IS NOT NULL GROUP BY tier_code
),
use AS (
    SELECT c.tier_code, u.perk_code, sum(u.used) AS used,
           count(*) FILTER (WHERE u.used > 0) AS clients_using,
           count(*) FILTER (WHERE e.yearly_quota IS NOT NULL AND u.used >= e.yearly_quota) AS clients_exhausted
    FROM client_yearly_usage u
    JOIN clients c ON c.id = u.client_id
    JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = u.perk_code
    WHERE u.year = $1
    GROUP BY c.tier_code, u.perk_code
)
SELECT e.tier_code, t.name AS tier_name, e.perk_code, p.name AS perk_name, e.yearly_quota,
       COALESCE(members.clients, 0) AS clients, COALESCE(use.used, 0) AS used,
       COALESCE(use.clients_using, 0) AS clients_using, COALESCE(use.clients_exhausted, 0) AS clients_exhausted
FROM entitlements e
JOIN tiers t ON t.code = e.tier_code
JOIN perks p ON p.code = e.perk_code
LEFT JOIN members ON members.tier_code = e.tier_code
LEFT JOIN use ON use.tier_code = e.tier_code AND use.perk_code = e.perk_code
ORDER BY t.rank DESC, e.tier_code, e.perk_code
"""
QUOTA_USE_COLUMNS = (
    "tier", "tier_name", "perk", "perk_name", "yearly_quota", "clients", "promised", "used", "used_pct",
    "clients_using", "clients_exhausted",
)


async def quota_use_report(conn: asyncpg.Connection, year: int) -> dict[str, Any]:
    """For each tier and perk it grants: what the clients now in that tier were promised in ``year``, what
    they used, how many used any and how many used it all (``promised``: ``None`` for an unlimited quota)."""
    rows = await conn.fetch(SELECT_QUOTA_USE, year)
    items = []
    for row in rows:
        quota, clients, used = row["yearly_quota"], row["clients"], int(row["used"])
        promised = None if quota is None else quota * clients
        items.append(
            {
                "tier": row["tier_code"],
                "tier_name": row["tier_name"],
                "perk": row["perk_code"],
                "perk_name": row["perk_name"],
                "yearly_quota": quota,
                "clients": clients,
                "promised": promised,
                "used": used,
                "used_pct": percent(used, promised),
                "clients_using": row["clients_using"],
                "clients_exhausted": row["clients_exhausted"],
            }
        )
    return {"year": year, "items": items}


# A client counts under each of its tags of now, with all its uses of the year; perks an entitlement reserves for
# a tag are listed for that tag even before anyone uses them.
SELECT_QUOTA_USE_BY_TAG = """
WITH tagged AS (SELECT id AS client_id, unnest(tags)::text AS tag FROM clients),
members AS (SELECT tag, count(*) AS clients FROM tagged GROUP BY tag),
use AS (
    SELECT t.tag, u.perk_code, sum(u.used) AS used, count(*) FILTER (WHERE u.used > 0) AS clients_using
    FROM client_yearly_usage u JOIN tagged t ON t.client_id = u.client_id
    WHERE u.year = $1
    GROUP BY t.tag, u.perk_code
),
pairs AS (
    SELECT tag, perk_code FROM use
    UNION
    SELECT required_tag::text, perk_code FROM entitlements WHERE required_tag IS NOT NULL
)
SELECT pairs.tag, pairs.perk_code, p.name AS perk_name, COALESCE(members.clients, 0) AS clients,
       COALESCE(use.used, 0) AS used, COALESCE(use.clients_using, 0) AS clients_using
FROM pairs
JOIN perks p ON p.code = pairs.perk_code
LEFT JOIN members ON members.tag = pairs.tag
LEFT JOIN use ON use.tag = pairs.tag AND use.perk_code = pairs.perk_code
ORDER BY pairs.tag COLLATE "C", pairs.perk_code COLLATE "C"
"""
QUOTA_USE_BY_TAG_COLUMNS = ("tag", "perk", "perk_name", "clients", "used", "clients_using")


async def quota_use_by_tag_report(conn: asyncpg.Connection, year: int) -> dict[str, Any]:
    """For each client tag and perk: how many clients carry the tag now, their uses of the perk in ``year`` and how
    many of them used it (a client with two tags counts under both)."""
    rows = await conn.fetch(SELECT_QUOTA_USE_BY_TAG, year)
    items = [
        {
            "tag": row["tag"],
            "perk": row["perk_code"],
            "perk_name": row["perk_name"],
            "clients": row["clients"],
            "used": int(row["used"]),
            "clients_using": row["clients_using"],
        }
        for row in rows
    ]
    return {"year": year, "items": items}
