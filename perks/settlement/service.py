"""Monthly statements: what the bank owes a merchant for a month, live while open, a fixed snapshot once final;
and the month's settlement, every merchant's statement totals side by side.

An open month's statement is computed when read:
- its own redemptions not voided, one line per store, perk and recorded unit price;
- a negative adjustment line for every void owed back: a redemption of a finalized earlier month that was voided
  after that month's snapshot and is not yet taken back by another finalized statement. Each such void lands in
  the first open month after its own, so the open month shows those of the run of finalized months right
  before it.

Finalizing copies that computation into the statement tables inside one REPEATABLE READ snapshot, together with
which of the month's redemptions were already voided (never paid) and which owed voids it takes back. Owing is
therefore decided by what the snapshot saw, not by comparing ``voided_at`` with ``finalized_at``: a void whose
instant was read before the snapshot but which committed after it is still owed back, exactly once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from perks.audit import service as audit
from perks.events.service import record_event
from perks.core.auth import Principal
from perks.core.errors import Conflict, NotFound
from perks.settlement.periods import Month



def finalized_run(year: str, month: str, merchant_id: str | None = None) -> str:
    """The SQL of the run of finalized months right before a month: those with no open month between them and it,
    where the voids owed back to that month come from. ``year``, ``month`` and ``merchant_id`` are the query's
    parameters (``"$2"``); without ``merchant_id``, every merchant's run. Rows: ``merchant_id, year, month``."""
    merchant_only = f" AND merchant_id = {merchant_id}" if merchant_id else ""
    return f"""
    SELECT merchant_id, year, month
    FROM (SELECT merchant_id, year, month,
                 row_number() OVER (PARTITION BY merchant_id ORDER BY year DESC, month DESC) AS back
          FROM statements
          WHERE (year, month) < ({year}, {month}){merchant_only}) finalized
    WHERE year * 12 + month = {year} * 12 + {month} - back
"""


# The merchant's redemptions of month ($2, $3), and the voids owed back from the run before it.
LIVE_LINES = """
WITH run AS (""" + finalized_run("$2", "$3", merchant_id="$1") + """),
lines AS (
    SELECT 'redemption' AS kind, r.store_id, r.perk_code, NULL::integer AS source_year,
           NULL::integer AS source_month, r.unit_price_fen, count(*)::integer AS count
    FROM redemptions r
    WHERE r.quota_year = $2 AND r.quota_month = $3 AND r.merchant_id = $1 AND r.status = 'redeemed'
    GROUP BY r.store_id, r.perk_code, r.unit_price_fen
    UNION ALL
    SELECT 'adjustment', o.store_id, o.perk_code, o.quota_year, o.quota_month, o.unit_price_fen,
           -count(*)::integer
    FROM owed_voids o
    JOIN run ON o.quota_year = run.year AND o.quota_month = run.month
    WHERE o.merchant_id = $1
    GROUP BY o.store_id, o.perk_code, o.quota_year, o.quota_month, o.unit_price_fen
)
SELECT l.kind, l.store_id, s.name AS store_name, l.perk_code, p.name AS perk_name, l.source_year,
       l.source_month, l.unit_price_fen, l.count, l.count * l.unit_price_fen AS amount_fen
FROM lines l
JOIN stores s ON s.id = l.store_id
JOIN perks p ON p.code = l.perk_code
ORDER BY l.kind = 'adjustment', s.name, l.store_id, l.perk_code, l.source_year, l.source_month, l.unit_price_fen
"""
SELECT_MERCHANT_NAME = "SELECT name FROM merchants WHERE id = $1"
SELECT_STATEMENT = """
SELECT id, merchant_name, redeemed_count, redeemed_fen, adjustment_count, adjustment_fen, finalized_at
FROM statements WHERE merchant_id = $1 AND year = $2 AND month = $3
"""
SELECT_STATEMENT_LINES = """
SELECT kind, store_id, store_name, perk_code, perk_name, source_year, source_month, unit_price_fen, count,
       amount_fen
FROM statement_lines WHERE statement_id = $1 ORDER BY line_no
"""


def line_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A statement line as the API shows it (``source_month``: the finalized month an adjustment corrects)."""
    source = Month(row["source_year"], row["source_month"]) if row["source_year"] is not None else None
    return {
        "kind": row["kind"],
        "store_id": str(row["store_id"]),
        "store_name": row["store_name"],
        "perk": row["perk_code"],
        "perk_name": row["perk_name"],
        "source_month": str(source) if source else None,
        "unit_price_fen": row["unit_price_fen"],
        "count": row["count"],
        "amount_fen": row["amount_fen"],
    }


def totals_of(lines: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The statement's totals: redeemed, adjusted (negative) and net, as counts and fen."""
    redeemed = [line for line in lines if line["kind"] == "redemption"]
    adjusted = [line for line in lines if line["kind"] == "adjustment"]
    return totals(
        sum(line["count"] for line in redeemed),
        sum(line["amount_fen"] for line in redeemed),
        sum(line["count"] for line in adjusted),
        sum(line["amount_fen"] for line in adjusted),
    )


def totals(redeemed_count: int, redeemed_fen: int, adjustment_count: int, adjustment_fen: int) -> dict[str, int]:
    """Totals from the redeemed and adjusted sums; ``count`` and ``amount_fen`` are net of adjustments."""
    return {
        "redeemed_count": int(redeemed_count),
        "redeemed_fen": int(redeemed_fen),
        "adjustment_count": int(adjustment_count),
        "adjustment_fen": int(adjustment_fen),
        "count": int(redeemed_count + adjustment_count),
        "amount_fen": int(redeemed_fen + adjustment_fen),
    }


def statement_view(
    merchant_id: UUID, merchant_name: str, month: Month, finalized_at: datetime | None, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """A statement as the API shows it."""
    return {
        "merchant_id": str(merchant_id),
        "merchant_name": merchant_name,
        "month": str(month),
        "status": "finalized" if finalized_at is not None else "open",
        "finalized_at": finalized_at,
        "lines": lines,
        "totals": totals_of(lines),
    }


def statement_entity_id(merchant_id: UUID | str, month: Month) -> str:
    """How a statement is named in the audit log: ``<merchant id>/<YYYY-MM>``."""
    return f"{merchant_id}/{month}"


async def get_statement(conn: asyncpg.Connection, merchant_id: UUID, month: Month) -> dict[str, Any]:
    """The merchant's statement for ``month``: the snapshot once finalized, else computed now; 404 if no merchant."""
    # One snapshot for the three reads, so a finalization committing in between cannot mix two versions.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        final = await conn.fetchrow(SELECT_STATEMENT, merchant_id, month.year, month.month)
        if final is not None:
            rows = await conn.fetch(SELECT_STATEMENT_LINES, final["id"])
            return statement_view(
                merchant_id, final["merchant_name"], month, final["finalized_at"], [line_view(r) for r in rows]
            )
        name = await conn.fetchval(SELECT_MERCHANT_NAME, merchant_id)
        if name is None:
            raise NotFound()
        rows = await conn.fetch(LIVE_LINES, merchant_id, month.year, month.month)
    return statement_view(merchant_id, name, month, None, [line_view(r) for r in rows])


STATEMENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM statements WHERE merchant_id = $1 AND year = $2 AND month = $3)"
INSERT_STATEMENT = """
INSERT INTO statements (merchant_id, year, month, merchant_name, redeemed_count, redeemed_fen, adjustment_count,
                        adjustment_fen, finalized_at, finalized_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id, finalized_at
"""
INSERT_LINE = """
INSERT INTO statement_lines (statement_id, line_no, kind, store_id, store_name, perk_code, perk_name, source_year,
                             source_month, unit_price_fen, count, amount_fen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
# The month's redemptions already voided when it is finalized: never paid, so never owed back.
INSERT_EXCLUSIONS = """
INSERT INTO statement_exclusions (redemption_id, statement_id)
SELECT id, $4 FROM redemptions
WHERE merchant_id = $1 AND quota_year = $2 AND quota_month = $3 AND status = 'voided'
"""
# Exactly the owed voids that LIVE_LINES turned into adjustment lines (same snapshot, same run).
INSERT_ADJUSTMENTS = """
WITH run AS (""" + finalized_run("$2", "$3", merchant_id="$1") + """)
INSERT INTO statement_adjustments (redemption_id, statement_id)
SELECT o.id, $4 FROM owed_voids o JOIN run ON o.quota_year = run.year AND o.quota_month = run.month
WHERE o.merchant_id = $1
"""


async def finalize(
    conn: asyncpg.Connection, actor: Principal, merchant_id: UUID, month: Month, now: datetime, tz: ZoneInfo
) -> dict[str, Any]:
    """Snapshot the merchant's statement for an ended ``month`` so that it never changes; audited.

    409 ``conflict`` when it is already finalized or the month has not ended in the bank's time zone (its
    redemptions could still change); 404 when there is no such merchant."""
    try:
        # REPEATABLE READ: the lines, the voids left out and the voids taken back all come from one snapshot.
        async with conn.transaction(isolation="repeatable_read"):
            name = await conn.fetchval(SELECT_MERCHANT_NAME, merchant_id)
            if name is None:
                raise NotFound()
            if await conn.fetchval(STATEMENT_EXISTS, merchant_id, month.year, month.month):
                raise Conflict(message=f"The statement of {month} is already finalized.")
            ends_at = month.ends_at(tz)
            if now < ends_at:
                raise Conflict(
                    message=f"{month} has not ended in the bank's time zone; it can be finalized from "
                    f"{ends_at.isoformat()}."
                )
            rows = await conn.fetch(LIVE_LINES, merchant_id, month.year, month.month)
            lines = [line_view(row) for row in rows]
            sums = totals_of(lines)
            finalized_by = UUID(actor.id) if actor.id and actor.role != "system" else None
            inserted = await conn.fetchrow(
                INSERT_STATEMENT,
                merchant_id,
                month.year,
                month.month,
                name,
                sums["redeemed_count"],
                sums["redeemed_fen"],
                sums["adjustment_count"],
                sums["adjustment_fen"],
                now,
                finalized_by,
            )
            statement_id = inserted["id"]
            await conn.executemany(INSERT_LINE, [_line_args(statement_id, n, row) for n, row in enumerate(rows, 1)])
            await conn.execute(INSERT_EXCLUSIONS, merchant_id, month.year, month.month, statement_id)
            taken_back = await conn.execute(INSERT_ADJUSTMENTS, merchant_id, month.year, month.month, statement_id)
            if int(taken_back.split()[-1]) != -sums["adjustment_count"]:
                raise RuntimeError("the owed voids taken back differ from the statement's adjustment lines")
            view = statement_view(merchant_id, name, month, inserted["finalized_at"], lines)
            entity_id = statement_entity_id(merchant_id, month)
            await audit.record(conn, actor, "statement.finalize", "statement", entity_id, None, view)
            totals_view = view["totals"]
            await record_event(conn, "statement.finalized", inserted["finalized_at"], {
                "statement_id": str(statement_id), "merchant_id": str(merchant_id), "year": month.year,
                "month": month.month, "total_fen": totals_view["amount_fen"],
                "redeemed_count": totals_view["redeemed_count"], "redeemed_fen": totals_view["redeemed_fen"],
                "adjustment_count": totals_view["adjustment_count"],
                "adjustment_fen": totals_view["adjustment_fen"], "finalized_at": inserted["finalized_at"],
            })
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "statements_merchant_id_year_month_key":
            # A concurrent finalization of the same statement committed first.
            raise Conflict(message=f"The statement of {month} is already finalized.") from None
        # A concurrent finalization of another month took back the same voids first: nothing was written.
        raise Conflict(message="Another statement of this merchant was finalized meanwhile; try again.") from None
    return view


def _line_args(statement_id: UUID, line_no: int, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        statement_id,
        line_no,
        row["kind"],
        row["store_id"],
        row["store_name"],
        row["perk_code"],
        row["perk_name"],
        row["source_year"],
        row["source_month"],
        row["unit_price_fen"],
        row["count"],
        row["amount_fen"],
    )


# Every merchant: a finalized month from its snapshot, an open one computed as its statement would be (own
# redemptions not voided, less the voids owed back from the run of finalized months right before it).
SELECT_SETTLEMENTS = """
WITH run AS (""" + finalized_run("$1", "$2") + """),
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
