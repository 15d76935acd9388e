"""Warning signs in a quota year's redemptions, each with the evidence a person needs to look into it.

- ``client_concentration``: a merchant whose standing redemptions (at least 20) go more than half to its top
  three clients;
- ``repeated_same_day``: one client redeeming at one merchant at least twice on one day (bank's time zone);
- ``capacity_early``: a merchant that used 90% of a perk's yearly capacity before 60% of the year had passed.

Voided redemptions are left out: a void is a correction, not a use. Each kind lists its worst cases first, at
most ``limit`` of them, and says how many it found in all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timezone
from typing import Any, Mapping
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from perks.privacy import mask_name
from perks.settlement.periods import year_bounds, year_fraction

KINDS = ("client_concentration", "repeated_same_day", "capacity_early")


@dataclass(frozen=True)
class Thresholds:
    """Where a pattern becomes a warning sign."""

    concentration_top_clients: int = 3
    concentration_share_pct: int = 50
    concentration_min_redemptions: int = 20
    same_day_min_redemptions: int = 2
    capacity_used_pct: int = 90
    capacity_before_year_pct: int = 60


# Per merchant, its clients ranked by standing redemptions; flagged when the top ones hold more than the share.
SELECT_CONCENTRATION = """
WITH per_client AS (
    SELECT merchant_id, client_id, count(*) AS n
    FROM redemptions
    WHERE quota_year = $1 AND status = 'redeemed'
    GROUP BY merchant_id, client_id
),
ranked AS (
    SELECT merchant_id, client_id, n,
           row_number() OVER (PARTITION BY merchant_id ORDER BY n DESC, client_id) AS place,
           sum(n) OVER (PARTITION BY merchant_id)::bigint AS total
    FROM per_client
),
flagged AS (
    SELECT merchant_id, total, sum(n)::bigint AS top_n,
           array_agg(client_id ORDER BY place) AS client_ids, array_agg(n ORDER BY place) AS counts
    FROM ranked
    WHERE place <= $2
    GROUP BY merchant_id, total
    HAVING total >= $3 AND sum(n) * 100 > total * $4
)
SELECT f.merchant_id, m.name AS merchant_name, f.total, f.top_n, f.client_ids, f.counts,
       count(*) OVER () AS found
FROM flagged f JOIN merchants m ON m.id = f.merchant_id
ORDER BY f.top_n::float8 / f.total DESC, f.total DESC, m.name, f.merchant_id
LIMIT $5
"""

# Days counted first (cheap), the redemptions of flagged days fetched after through the client's index.
SELECT_SAME_DAY = """
WITH days AS (
    SELECT merchant_id, client_id, (redeemed_at AT TIME ZONE $2)::date AS day, count(*) AS n
    FROM redemptions
    WHERE quota_year = $1 AND status = 'redeemed'
    GROUP BY merchant_id, client_id, day
    HAVING count(*) >= $3
),
worst AS (
    SELECT d.*, count(*) OVER () AS found FROM days d ORDER BY d.n DESC, d.day, d.merchant_id, d.client_id LIMIT $4
)
SELECT w.merchant_id, m.name AS merchant_name, w.client_id, c.name AS client_name, w.day, w.n, w.found,
       array(SELECT r.id FROM redemptions r
             WHERE r.client_id = w.client_id AND r.merchant_id = w.merchant_id AND r.status = 'redeemed'
               AND r.redeemed_at >= w.day::timestamp AT TIME ZONE $2
               AND r.redeemed_at < (w.day + 1)::timestamp AT TIME ZONE $2
             ORDER BY r.redeemed_at, r.id) AS redemption_ids,
       array(SELECT r.perk_code::text FROM redemptions r
             WHERE r.client_id = w.client_id AND r.merchant_id = w.merchant_id AND r.status = 'redeemed'
               AND r.redeemed_at >= w.day::timestamp AT TIME ZONE $2
               AND r.redeemed_at < (w.day + 1)::timestamp AT TIME ZONE $2
             ORDER BY r.redeemed_at, r.id) AS perks
FROM worst w
JOIN merchants m ON m.id = w.merchant_id
JOIN clients c ON c.id = w.client_id
ORDER BY w.n DESC, w.day, m.name, w.merchant_id, w.client_id
"""

# Only agreements whose counter already shows the share used need their redemptions read: the instant the
# threshold-th standing redemption happened is when the share was reached.
SELECT_CAPACITY_EARLY = """
WITH candidates AS (
    SELECT a.merchant_id, a.perk_code, a.yearly_capacity, u.used,
           (a.yearly_capacity * $2 + 99) / 100 AS threshold
    FROM agreements a
    JOIN merchant_yearly_usage u ON u.merchant_id = a.merchant_id AND u.perk_code = a.perk_code AND u.year = $1
    WHERE a.yearly_capacity > 0 AND u.used * 100 >= a.yearly_capacity * $2
),
reached AS (
    SELECT c.*,
           (SELECT r.redeemed_at FROM redemptions r
            WHERE r.merchant_id = c.merchant_id AND r.perk_code = c.perk_code AND r.quota_year = $1
              AND r.status = 'redeemed'
            ORDER BY r.redeemed_at, r.id
            OFFSET c.threshold - 1 LIMIT 1) AS reached_at
    FROM candidates c
)
SELECT r.merchant_id, m.name AS merchant_name, r.perk_code, r.yearly_capacity, r.used, r.threshold,
       r.reached_at, count(*) OVER () AS found
FROM reached r JOIN merchants m ON m.id = r.merchant_id
WHERE r.reached_at < $3
ORDER BY r.reached_at, m.name, r.merchant_id, r.perk_code
LIMIT $4
"""


def _item(kind: str, row: Mapping[str, Any], perk: str | None, evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "merchant_id": str(row["merchant_id"]),
        "merchant_name": row["merchant_name"],
        "perk": perk,
        "evidence": evidence,
    }


SELECT_CLIENT_NAMES = "SELECT id, name FROM clients WHERE id = ANY($1::uuid[])"


async def _concentration(conn: asyncpg.Connection, year: int, t: Thresholds, limit: int) -> tuple[list, int]:
    rows = await conn.fetch(
        SELECT_CONCENTRATION,
        year,
        t.concentration_top_clients,
        t.concentration_min_redemptions,
        t.concentration_share_pct,
        limit,
    )
    ids = list({client_id for row in rows for client_id in row["client_ids"]})
    names: dict[UUID, str] = {r["id"]: r["name"] for r in await conn.fetch(SELECT_CLIENT_NAMES, ids)}
    items = []
    for row in rows:
        top = [
            {"client_id": str(client_id), "display_name": mask_name(names[client_id]), "redemptions": n}
            for client_id, n in zip(row["client_ids"], row["counts"])
        ]
        evidence = {
            "redemptions": row["total"],
            "top_clients": top,
            "top_redemptions": row["top_n"],
            "top_share_pct": round(100 * row["top_n"] / row["total"], 1),
        }
        items.append(_item("client_concentration", row, None, evidence))
    return items, rows[0]["found"] if rows else 0


async def _same_day(
    conn: asyncpg.Connection, year: int, tz: ZoneInfo, t: Thresholds, limit: int
) -> tuple[list, int]:
    rows = await conn.fetch(SELECT_SAME_DAY, year, tz.key, t.same_day_min_redemptions, limit)
    items = [
        _item(
            "repeated_same_day",
            row,
            None,
            {
                "client_id": str(row["client_id"]),
                "display_name": mask_name(row["client_name"]),
                "date": row["day"],
                "redemptions": row["n"],
                "redemption_ids": [str(rid) for rid in row["redemption_ids"]],
                "perks": list(row["perks"]),
            },
        )
        for row in rows
    ]
    return items, rows[0]["found"] if rows else 0


async def _capacity_early(
    conn: asyncpg.Connection, year: int, tz: ZoneInfo, t: Thresholds, limit: int
) -> tuple[list, int]:
    start, end = (moment.astimezone(timezone.utc) for moment in year_bounds(year, tz))
    cutoff = start + (end - start) * (t.capacity_before_year_pct / 100)
    rows = await conn.fetch(SELECT_CAPACITY_EARLY, year, t.capacity_used_pct, cutoff, limit)
    items = [
        _item(
            "capacity_early",
            row,
            row["perk_code"],
            {
                "yearly_capacity": row["yearly_capacity"],
                "used": row["used"],
                "threshold": row["threshold"],
                "reached_at": row["reached_at"],
                "year_elapsed_pct": round(100 * year_fraction(row["reached_at"], year, tz), 1),
            },
        )
        for row in rows
    ]
    return items, rows[0]["found"] if rows else 0


async def anomalies(
    conn: asyncpg.Connection,
    year: int,
    tz: ZoneInfo,
    *,
    kind: str | None = None,
    limit: int = 100,
    thresholds: Thresholds = Thresholds(),
) -> dict[str, Any]:
    """``{year, thresholds, found, items}``: the warning signs of ``year`` (one ``kind``, or all), at most
    ``limit`` of each kind, worst first; ``found`` counts each kind's cases in all."""
    items: list[dict[str, Any]] = []
    found: dict[str, int] = {}
    if kind in (None, "client_concentration"):
        listed, found["client_concentration"] = await _concentration(conn, year, thresholds, limit)
        items += listed
    if kind in (None, "repeated_same_day"):
        listed, found["repeated_same_day"] = await _same_day(conn, year, tz, thresholds, limit)
        items += listed
    if kind in (None, "capacity_early"):
        listed, found["capacity_early"] = await _capacity_early(conn, year, tz, thresholds, limit)
        items += listed
    return {"year": year, "thresholds": asdict(thresholds), "found": found, "items": items}
