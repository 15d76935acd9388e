"""Clients' ratings of their redemptions, and what merchants and the bank read of them.

A client rates a redemption of its own once, within 30 days of redeeming. A redemption already voided cannot be
rated (it did not count); a rating given before a void stays, so that voiding is no way to erase a bad one.
Readers see a client only as a masked name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import Conflict, NotFound
from perks.core.pagination import decode_cursor, page, time_id_after
from perks.privacy import mask_name

FEEDBACK_WINDOW = timedelta(days=30)

# FOR SHARE: a void of this redemption in flight is waited for, and its outcome seen.
SELECT_REDEMPTION = """
SELECT r.id, r.client_id, r.merchant_id, r.store_id, r.perk_code, r.status, r.redeemed_at,
       EXISTS (SELECT 1 FROM feedback f WHERE f.redemption_id = r.id) AS rated
FROM redemptions r WHERE r.id = $1
FOR SHARE OF r
"""
INSERT_FEEDBACK = """
INSERT INTO feedback (redemption_id, client_id, merchant_id, store_id, perk_code, rating, comment, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (redemption_id) DO NOTHING
RETURNING redemption_id, rating, comment, created_at
"""


def feedback_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A rating as its client sees it."""
    return {
        "redemption_id": str(row["redemption_id"]),
        "rating": row["rating"],
        "comment": row["comment"],
        "created_at": row["created_at"],
    }


async def give_feedback(
    conn: asyncpg.Connection,
    actor: Principal,
    redemption_id: UUID,
    rating: int,
    comment: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Rate the client's own redemption, once, within 30 days of redeeming; audited as ``feedback.create``.

    404 for a redemption that is not the client's; 409 ``conflict`` when already rated, voided, or too late."""
    async with conn.transaction():
        row = await conn.fetchrow(SELECT_REDEMPTION, redemption_id)
        if row is None or str(row["client_id"]) != actor.id:
            raise NotFound()
        if row["rated"]:
            raise Conflict(message="This redemption is already rated; a rating is given once.")
        if row["status"] == "voided":
            raise Conflict(message="This redemption was voided; it cannot be rated.")
        if now - row["redeemed_at"] > FEEDBACK_WINDOW:
            raise Conflict(message="A redemption can be rated within 30 days of redeeming only.")
        inserted = await conn.fetchrow(
            INSERT_FEEDBACK,
            redemption_id,
            row["client_id"],
            row["merchant_id"],
            row["store_id"],
            row["perk_code"],
            rating,
            comment,
            now,
        )
        if inserted is None:
            # A concurrent request rated it first.
            raise Conflict(message="This redemption is already rated; a rating is given once.")
        view = feedback_view(inserted)
        await audit.record(conn, actor, "feedback.create", "feedback", redemption_id, None, view)
    return view


SELECT_RATING = """
SELECT round(avg(rating), 2) AS average, count(*) AS count FROM feedback WHERE merchant_id = $1
"""


def rating_view(average: Any, count: int) -> dict[str, Any]:
    """``{average, count}``: the mean rating to two decimals (``None`` without any rating) and how many."""
    return {"average": float(average) if average is not None else None, "count": int(count)}


async def merchant_rating(conn: asyncpg.Connection, merchant_id: UUID) -> dict[str, Any]:
    """``{average, count}`` of every rating a merchant has received (``average`` is ``None`` without any)."""
    row = await conn.fetchrow(SELECT_RATING, merchant_id)
    return rating_view(row["average"], row["count"])


SELECT_RATINGS = """
SELECT merchant_id, round(avg(rating), 2) AS average, count(*) AS count FROM feedback GROUP BY merchant_id
"""


async def merchant_ratings(conn: asyncpg.Connection) -> dict[UUID, dict[str, Any]]:
    """Every rated merchant's ``{average, count}``, by merchant id."""
    rows = await conn.fetch(SELECT_RATINGS)
    return {row["merchant_id"]: rating_view(row["average"], row["count"]) for row in rows}


MERCHANT_EXISTS = "SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1)"
# Newest first; ties on the instant broken by redemption id, as the feedback_merchant index is ordered.
SELECT_FEEDBACK = """
SELECT f.redemption_id, f.rating, f.comment, f.created_at, f.perk_code, p.name AS perk_name, f.store_id,
       s.name AS store_name, c.name AS client_name
FROM feedback f
JOIN clients c ON c.id = f.client_id
JOIN stores s ON s.id = f.store_id
JOIN perks p ON p.code = f.perk_code
WHERE f.merchant_id = $1
  AND ($2::timestamptz IS NULL OR f.created_at < $2 OR (f.created_at = $2 AND f.redemption_id > $3::uuid))
ORDER BY f.created_at DESC, f.redemption_id
LIMIT $4
"""


def merchant_feedback_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A rating as a merchant and the bank read it: the client only as a masked name."""
    return {
        "redemption_id": str(row["redemption_id"]),
        "rating": row["rating"],
        "comment": row["comment"],
        "created_at": row["created_at"],
        "perk": row["perk_code"],
        "perk_name": row["perk_name"],
        "store_id": str(row["store_id"]),
        "store_name": row["store_name"],
        "client": {"display_name": mask_name(row["client_name"])},
    }


def _feedback_key(item: Mapping[str, Any]) -> list[Any]:
    return [item["created_at"].isoformat(), item["redemption_id"]]


async def list_feedback(
    conn: asyncpg.Connection, merchant_id: UUID, *, cursor: str | None, limit: int
) -> dict[str, Any]:
    """``{items, next_cursor, average, count}``: a merchant's ratings, newest first, and its rating overall."""
    after_at, after_id = time_id_after(decode_cursor(cursor, 2))
    if not await conn.fetchval(MERCHANT_EXISTS, merchant_id):
        raise NotFound()
    rows = await conn.fetch(SELECT_FEEDBACK, merchant_id, after_at, after_id, limit + 1)
    result = page([merchant_feedback_view(row) for row in rows], limit, _feedback_key)
    return result | await merchant_rating(conn, merchant_id)
