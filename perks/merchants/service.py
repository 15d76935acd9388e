"""Merchants, their stores and partner agreements, and how much of its yearly capacity a merchant has used."""

from __future__ import annotations

import re
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks import quotas
from perks.audit import service as audit
from perks.audit.changes import AuditedRow, audited_insert, audited_update
from perks.events.service import record_event
from perks.core.auth import Principal
from perks.core.errors import NotFound
from perks.core.pagination import time_id_after
from perks.core.updates import changed_fields

MERCHANT_STATUSES = ("active", "suspended")


def merchant_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A merchant as the API shows it."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "category": row["category"],
        "city": row["city"],
        "contact_phone": row["contact_phone"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def store_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A store as the API shows it."""
    return {
        "id": str(row["id"]),
        "merchant_id": str(row["merchant_id"]),
        "name": row["name"],
        "address": row["address"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def agreement_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A partner agreement as the API shows it."""
    return {
        "merchant_id": str(row["merchant_id"]),
        "perk": row["perk_code"],
        "yearly_capacity": row["yearly_capacity"],
        "unit_price_fen": row["unit_price_fen"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# ---- merchants -------------------------------------------------------------------------------

INSERT_MERCHANT = """
INSERT INTO merchants (name, category, city, contact_phone) VALUES ($1, $2, $3, $4)
RETURNING id, name, category, city, contact_phone, status, created_at, updated_at
"""


async def create_merchant(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    name: str,
    category: str,
    city: str | None = None,
    contact_phone: str | None = None,
) -> dict[str, Any]:
    """Create an active merchant."""
    return await audited_insert(conn, actor, MERCHANT_ROW, INSERT_MERCHANT, name, category, city, contact_phone)


SELECT_MERCHANT = """
SELECT id, name, category, city, contact_phone, status, created_at, updated_at FROM merchants WHERE id = $1
"""


async def get_merchant(conn: asyncpg.Connection, merchant_id: UUID) -> dict[str, Any]:
    """One merchant; 404 when there is none."""
    row = await conn.fetchrow(SELECT_MERCHANT, merchant_id)
    if row is None:
        raise NotFound()
    return merchant_view(row)


SELECT_MERCHANTS = """
SELECT id, name, category, city, contact_phone, status, created_at, updated_at FROM merchants
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4
"""


async def list_merchants(
    conn: asyncpg.Connection, status: str | None, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """Merchants, oldest first, optionally only those of one status."""
    created_at, last_id = time_id_after(after)
    rows = await conn.fetch(SELECT_MERCHANTS, status, created_at, last_id, limit)
    return [merchant_view(row) for row in rows]


SELECT_MERCHANT_FOR_UPDATE = """
SELECT id, name, category, city, contact_phone, status, created_at, updated_at FROM merchants WHERE id = $1
FOR UPDATE
"""
UPDATE_MERCHANT = """
UPDATE merchants SET name = $2, category = $3, city = $4, contact_phone = $5, status = $6, updated_at = now()
WHERE id = $1
RETURNING id, name, category, city, contact_phone, status, created_at, updated_at
"""
MERCHANT_ROW = AuditedRow(
    "merchant", SELECT_MERCHANT_FOR_UPDATE, UPDATE_MERCHANT, ("name", "category", "city", "contact_phone", "status"),
    merchant_view,
)


async def update_merchant(
    conn: asyncpg.Connection, actor: Principal, merchant_id: UUID, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change some of a merchant's fields (``name``, ``category``, ``city``, ``contact_phone``, ``status``)."""
    async def after_change(conn: asyncpg.Connection, before: dict[str, Any], after: dict[str, Any]) -> None:
        if before["status"] != "suspended" and after["status"] == "suspended":
            await record_event(conn, "merchant.suspended", after["updated_at"],
                               {"merchant_id": str(merchant_id), "name": after["name"]})

    return await audited_update(conn, actor, MERCHANT_ROW, (merchant_id,), changes, after_change=after_change)


# ---- stores ----------------------------------------------------------------------------------

# Inserting through a SELECT of the merchant makes "no such merchant" an empty result, not an error.
INSERT_STORE = """
INSERT INTO stores (merchant_id, name, address)
SELECT id, $2, $3 FROM merchants WHERE id = $1
RETURNING id, merchant_id, name, address, created_at, updated_at
"""


async def create_store(
    conn: asyncpg.Connection, actor: Principal, merchant_id: UUID, *, name: str, address: str | None = None
) -> dict[str, Any]:
    """Create a store of ``merchant_id``; 404 when there is no such merchant."""
    async with conn.transaction():
        row = await conn.fetchrow(INSERT_STORE, merchant_id, name, address)
        if row is None:
            raise NotFound()
        view = store_view(row)
        await audit.record(conn, actor, "store.create", "store", row["id"], None, view)
    return view


MERCHANT_EXISTS = "SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1)"
SELECT_STORES = """
SELECT id, merchant_id, name, address, created_at, updated_at FROM stores
WHERE merchant_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4
"""


async def list_stores(
    conn: asyncpg.Connection, merchant_id: UUID, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """The stores of one merchant, oldest first; 404 when there is no such merchant."""
    created_at, last_id = time_id_after(after)
    if not await conn.fetchval(MERCHANT_EXISTS, merchant_id):
        raise NotFound()
    rows = await conn.fetch(SELECT_STORES, merchant_id, created_at, last_id, limit)
    return [store_view(row) for row in rows]


SELECT_STORE_FOR_UPDATE = """
SELECT id, merchant_id, name, address, created_at, updated_at FROM stores WHERE id = $1 AND merchant_id = $2
FOR UPDATE
"""
UPDATE_STORE = """
UPDATE stores SET name = $2, address = $3, updated_at = now() WHERE id = $1
RETURNING id, merchant_id, name, address, created_at, updated_at
"""
STORE_ROW = AuditedRow("store", SELECT_STORE_FOR_UPDATE, UPDATE_STORE, ("name", "address"), store_view)


async def update_store(
    conn: asyncpg.Connection, actor: Principal, merchant_id: UUID, store_id: UUID, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change a store's ``name`` or ``address``; 404 unless it is a store of ``merchant_id``."""
    return await audited_update(conn, actor, STORE_ROW, (store_id,), changes, lock_args=(store_id, merchant_id))


# ---- agreements ------------------------------------------------------------------------------

PERK_CODE = re.compile(r"[a-z0-9_]{1,32}")
# `::text`: compared as text, not cast to the `code` domain (whose check would raise instead of not matching).
PERK_EXISTS = "SELECT EXISTS (SELECT 1 FROM perks WHERE code = $1::text)"
SELECT_AGREEMENT_FOR_UPDATE = """
SELECT merchant_id, perk_code, yearly_capacity, unit_price_fen, created_at, updated_at FROM agreements
WHERE merchant_id = $1 AND perk_code = $2::text
FOR UPDATE
"""
INSERT_AGREEMENT = """
INSERT INTO agreements (merchant_id, perk_code, yearly_capacity, unit_price_fen) VALUES ($1, $2, $3, $4)
ON CONFLICT (merchant_id, perk_code) DO NOTHING
RETURNING merchant_id, perk_code, yearly_capacity, unit_price_fen, created_at, updated_at
"""
UPDATE_AGREEMENT = """
UPDATE agreements SET yearly_capacity = $3, unit_price_fen = $4, updated_at = now()
WHERE merchant_id = $1 AND perk_code = $2::text
RETURNING merchant_id, perk_code, yearly_capacity, unit_price_fen, created_at, updated_at
"""


def agreement_entity_id(merchant_id: UUID | str, perk: str) -> str:
    """How an agreement is named in the audit log."""
    return f"{merchant_id}/{perk}"


async def put_agreement(
    conn: asyncpg.Connection,
    actor: Principal,
    merchant_id: UUID,
    perk: str,
    *,
    yearly_capacity: int | None,
    unit_price_fen: int,
) -> dict[str, Any]:
    """Create or replace the agreement under which ``merchant_id`` honours ``perk``; 404 if either is unknown."""
    terms = {"yearly_capacity": yearly_capacity, "unit_price_fen": unit_price_fen}
    if not PERK_CODE.fullmatch(perk):
        raise NotFound()
    async with conn.transaction():
        if not await conn.fetchval(MERCHANT_EXISTS, merchant_id) or not await conn.fetchval(PERK_EXISTS, perk):
            raise NotFound()
        current = await conn.fetchrow(SELECT_AGREEMENT_FOR_UPDATE, merchant_id, perk)
        row = None
        if current is None:
            row = await conn.fetchrow(INSERT_AGREEMENT, merchant_id, perk, yearly_capacity, unit_price_fen)
            if row is None:
                # Another request created it since we looked: lock theirs and replace it.
                current = await conn.fetchrow(SELECT_AGREEMENT_FOR_UPDATE, merchant_id, perk)
        before = agreement_view(current) if current is not None else None
        if before is not None:
            if not changed_fields(before, terms):
                return before
            row = await conn.fetchrow(UPDATE_AGREEMENT, merchant_id, perk, yearly_capacity, unit_price_fen)
        after = agreement_view(row)
        entity_id = agreement_entity_id(merchant_id, perk)
        await audit.record(conn, actor, "agreement.put", "agreement", entity_id, before, after)
    return after


SELECT_AGREEMENTS = """
SELECT merchant_id, perk_code, yearly_capacity, unit_price_fen, created_at, updated_at FROM agreements
WHERE merchant_id = $1 AND ($2::text IS NULL OR perk_code > $2)
ORDER BY perk_code LIMIT $3
"""


async def list_agreements(
    conn: asyncpg.Connection, merchant_id: UUID, after_perk: str | None, limit: int
) -> list[dict[str, Any]]:
    """The agreements of one merchant, by perk code; 404 when there is no such merchant."""
    if not await conn.fetchval(MERCHANT_EXISTS, merchant_id):
        raise NotFound()
    rows = await conn.fetch(SELECT_AGREEMENTS, merchant_id, after_perk, limit)
    return [agreement_view(row) for row in rows]


# ---- usage -----------------------------------------------------------------------------------

SELECT_USAGE = """
SELECT a.perk_code AS perk, a.yearly_capacity, COALESCE(u.used, 0) AS used, a.unit_price_fen
FROM agreements a
LEFT JOIN merchant_yearly_usage u
       ON u.merchant_id = a.merchant_id AND u.perk_code = a.perk_code AND u.year = $2
WHERE a.merchant_id = $1
ORDER BY a.perk_code
"""


def remaining_capacity(yearly_capacity: int | None, used: int) -> int | None:
    """What a merchant may still redeem of a perk this year (``None``: no cap); never below zero."""
    return quotas.remaining(yearly_capacity, used)


async def merchant_usage(conn: asyncpg.Connection, merchant_id: UUID, year: int) -> dict[str, Any]:
    """``{year, items}``: for each perk the merchant honours, its capacity, use and price in ``year``."""
    rows = await conn.fetch(SELECT_USAGE, merchant_id, year)
    items = [
        {
            "perk": row["perk"],
            "yearly_capacity": row["yearly_capacity"],
            "used": row["used"],
            "remaining": remaining_capacity(row["yearly_capacity"], row["used"]),
            "unit_price_fen": row["unit_price_fen"],
        }
        for row in rows
    ]
    return {"year": year, "items": items}
