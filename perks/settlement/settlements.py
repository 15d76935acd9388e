"""The bank's view of a month's settlement: one summary per merchant, finalized or still open, and the totals."""

from __future__ import annotations

from typing import Any, Mapping

import asyncpg

from perks.settlement.periods import Month
from perks.settlement.statements import totals

# Every merchant: a finalized month from its snapshot, an open one computed as its statement would be (own
# redemptions not voided, less the voids owed back from the run of finalized months right before it).
SELECT_SETTLEMENTS = """
WITH run AS (
    SELECT merchant_id, year, month
    FROM (SELECT merchant_id, year, month,
                 row_number() OVER (PARTITION BY merchant_id ORDER BY year DESC, month DESC) AS back
          FROM statements
          WHERE (year, month) < ($1, $2)) finalized
    WHERE year * 12 + month = $1 * 12 + $2 - back
),
own AS (
    SELECT merchant_id, count(*) AS n, sum(unit_price_fen)::bigint AS fen
    FROM redemptions
    WHERE quota_year = $1 AND quota_month = $2 AND status = 'redeemed'
    GROUP BY merchant_id
),
owed AS (
    SELECT o.merchant_id, count(*) AS n, sum(o.unit_price_fen)::bigint AS fen
    FROM owed_voids o
    JOIN run ON run.merchant_id = o.merchant_id AND run.year = o.quota_year AND run.month = o.quota_month
    GROUP BY o.merchant_id
)
SELECT m.id AS merchant_id, COALESCE(f.merchant_name, m.name) AS merchant_name, f.finalized_at,
       CASE WHEN f.id IS NULL THEN COALESCE(own.n, 0) ELSE f.redeemed_count END AS redeemed_count,
       CASE WHEN f.id IS NULL THEN COALESCE(own.fen, 0) ELSE f.redeemed_fen END AS redeemed_fen,
       CASE WHEN f.id IS NULL THEN -COALESCE(owed.n, 0) ELSE f.adjustment_count END AS adjustment_count,
       CASE WHEN f.id IS NULL THEN -COALESCE(owed.fen, 0) ELSE f.adjustment_fen END AS adjustment_fen
FROM merchants m
LEFT JOIN statements f ON f.merchant_id = m.id AND f.year = $1 AND f.month = $2
LEFT JOIN own ON own.merchant_id = m.id
LEFT JOIN owed ON owed.merchant_id = m.id
ORDER BY merchant_name, m.id
"""


def summary_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One merchant's line of the month's settlement."""
    return {
        "merchant_id": str(row["merchant_id"]),
        "merchant_name": row["merchant_name"],
        "status": "finalized" if row["finalized_at"] is not None else "open",
        "finalized_at": row["finalized_at"],
        **totals(row["redeemed_count"], row["redeemed_fen"], row["adjustment_count"], row["adjustment_fen"]),
    }


async def month_settlement(conn: asyncpg.Connection, month: Month) -> dict[str, Any]:
    """``{month, items, totals}``: every merchant's statement totals for ``month`` and their sum."""
    rows = await conn.fetch(SELECT_SETTLEMENTS, month.year, month.month)
    items = [summary_view(row) for row in rows]
    keys = ("redeemed_count", "redeemed_fen", "adjustment_count", "adjustment_fen")
    sums = {key: sum(item[key] for item in items) for key in keys}
    return {"month": str(month), "items": items, "totals": totals(**sums)}
