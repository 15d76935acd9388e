"""The catalogue: tiers, perks, and which perks each tier grants how often (entitlements)."""

from __future__ import annotations

from typing import Any, Mapping

import asyncpg

from perks.audit import service as audit
from perks.audit.changes import AuditedRow, audited_insert, audited_update
from perks.core.auth import Principal
from perks.core.errors import NotFound
from perks.core.updates import constraint_errors

# The database's constraints are the last word on every rule; these name the field each one guards, so that a
# caller that skipped the HTTP models (an importer, a seeder) still gets a 400 or 409 rather than a 500.
CATALOGUE_CONSTRAINTS = {
    "code_check": "code",
    "tiers_pkey": "code",
    "tiers_rank_key": "rank",
    "tiers_name_check": "name",
    "tiers_rank_check": "rank",
    "tiers_min_points_check": "min_points",
    "perks_pkey": "code",
    "perks_name_check": "name",
    "perks_category_check": "category",
    "perks_description_check": "description",
    "perks_voucher_ttl_seconds_check": "voucher_ttl_seconds",
    "entitlements_yearly_quota_check": "yearly_quota",
    "entitlements_monthly_cap_check": "monthly_cap",
    "entitlements_required_tag_check": "required_tag",
}


# Tiers ----------------------------------------------------------------------------------------------------------

INSERT_TIER = """
INSERT INTO tiers (code, name, rank, min_points) VALUES ($1, $2, $3, $4)
RETURNING code, name, rank, min_points, created_at, updated_at
"""
SELECT_TIER = """
SELECT code, name, rank, min_points, created_at, updated_at FROM tiers WHERE code = $1::text
"""
LOCK_TIER = """
SELECT code, name, rank, min_points, created_at, updated_at FROM tiers WHERE code = $1::text FOR NO KEY UPDATE
"""
UPDATE_TIER = """
UPDATE tiers SET name = $2, rank = $3, min_points = $4, updated_at = now() WHERE code = $1::text
RETURNING code, name, rank, min_points, created_at, updated_at
"""
SELECT_TIERS = """
SELECT code, name, rank, min_points, created_at, updated_at FROM tiers
WHERE ($1::integer IS NULL OR rank > $1) ORDER BY rank LIMIT $2
"""


def tier_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A tier as the API shows it."""
    return {
        "code": row["code"],
        "name": row["name"],
        "rank": row["rank"],
        "min_points": row["min_points"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def create_tier(
    conn: asyncpg.Connection, actor: Principal, *, code: str, name: str, rank: int, min_points: int = 0
) -> dict[str, Any]:
    """Create a tier; 409 naming ``code`` or ``rank`` when either is taken."""
    return await audited_insert(conn, actor, TIER_ROW, INSERT_TIER, code, name, rank, min_points, id_column="code")


async def get_tier(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    """One tier; 404 when there is none with that code."""
    row = await conn.fetchrow(SELECT_TIER, code)
    if row is None:
        raise NotFound()
    return tier_view(row)


async def list_tiers(conn: asyncpg.Connection, after_rank: int | None, limit: int) -> list[dict[str, Any]]:
    """Tiers from the lowest rank up, after ``after_rank``."""
    return [tier_view(row) for row in await conn.fetch(SELECT_TIERS, after_rank, limit)]


TIER_ROW = AuditedRow("tier", LOCK_TIER, UPDATE_TIER, ("name", "rank", "min_points"), tier_view, CATALOGUE_CONSTRAINTS)


async def update_tier(conn: asyncpg.Connection, actor: Principal, code: str, **changes: Any) -> dict[str, Any]:
    """Change a tier's name, rank or minimum points (its code never changes); audited when anything differs."""
    return await audited_update(conn, actor, TIER_ROW, (code,), changes)


# Perks ----------------------------------------------------------------------------------------------------------

INSERT_PERK = """
INSERT INTO perks (code, name, category, description, voucher_ttl_seconds, birthday_only)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING code, name, category, description, voucher_ttl_seconds, birthday_only, created_at, updated_at
"""
SELECT_PERK = """
SELECT code, name, category, description, voucher_ttl_seconds, birthday_only, created_at, updated_at
FROM perks WHERE code = $1::text
"""
LOCK_PERK = """
SELECT code, name, category, description, voucher_ttl_seconds, birthday_only, created_at, updated_at
FROM perks WHERE code = $1::text FOR NO KEY UPDATE
"""
UPDATE_PERK = """
UPDATE perks SET name = $2, category = $3, description = $4, voucher_ttl_seconds = $5, birthday_only = $6,
                 updated_at = now()
WHERE code = $1::text
RETURNING code, name, category, description, voucher_ttl_seconds, birthday_only, created_at, updated_at
"""
# Codes are compared byte-wise so that the order, and so the cursor, is the same on every server.
SELECT_PERKS = """
SELECT code, name, category, description, voucher_ttl_seconds, birthday_only, created_at, updated_at FROM perks
WHERE ($1::text IS NULL OR code COLLATE "C" > $1) ORDER BY code COLLATE "C" LIMIT $2
"""


def perk_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A perk as the API shows it."""
    return {
        "code": row["code"],
        "name": row["name"],
        "category": row["category"],
        "description": row["description"],
        "voucher_ttl_seconds": row["voucher_ttl_seconds"],
        "birthday_only": row["birthday_only"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def create_perk(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    code: str,
    name: str,
    category: str,
    description: str | None = None,
    voucher_ttl_seconds: int = 300,
    birthday_only: bool = False,
) -> dict[str, Any]:
    """Create a perk; 409 naming ``code`` when it is taken."""
    return await audited_insert(
        conn, actor, PERK_ROW, INSERT_PERK, code, name, category, description, voucher_ttl_seconds, birthday_only,
        id_column="code",
    )


async def get_perk(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    """One perk; 404 when there is none with that code."""
    row = await conn.fetchrow(SELECT_PERK, code)
    if row is None:
        raise NotFound()
    return perk_view(row)


async def list_perks(conn: asyncpg.Connection, after_code: str | None, limit: int) -> list[dict[str, Any]]:
    """Perks in order of their codes, after ``after_code``."""
    return [perk_view(row) for row in await conn.fetch(SELECT_PERKS, after_code, limit)]


PERK_ROW = AuditedRow(
    "perk", LOCK_PERK, UPDATE_PERK, ("name", "category", "description", "voucher_ttl_seconds", "birthday_only"),
    perk_view, CATALOGUE_CONSTRAINTS,
)


async def update_perk(conn: asyncpg.Connection, actor: Principal, code: str, **changes: Any) -> dict[str, Any]:
    """Change a perk (its code never changes); audited when anything differs.

    Vouchers already issued keep the lifetime they were signed with."""
    return await audited_update(conn, actor, PERK_ROW, (code,), changes)


# Entitlements ---------------------------------------------------------------------------------------------------


# Locking the tier row serialises changes to one tier's entitlements, so that each audit entry's `before` is
# exactly what the change replaced. NO KEY UPDATE leaves clients free to reference the tier meanwhile.
LOCK_TIER_CODE = "SELECT code FROM tiers WHERE code = $1::text FOR NO KEY UPDATE"
SELECT_TIER_CODE = "SELECT code FROM tiers WHERE code = $1::text"
SELECT_PERK_CODE = "SELECT code FROM perks WHERE code = $1::text"
SELECT_ENTITLEMENT = """
SELECT tier_code, perk_code, yearly_quota, monthly_cap, required_tag, updated_at FROM entitlements
WHERE tier_code = $1::text AND perk_code = $2::text
"""
UPSERT_ENTITLEMENT = """
INSERT INTO entitlements (tier_code, perk_code, yearly_quota, monthly_cap, required_tag) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tier_code, perk_code)
DO UPDATE SET yearly_quota = EXCLUDED.yearly_quota, monthly_cap = EXCLUDED.monthly_cap,
              required_tag = EXCLUDED.required_tag, updated_at = now()
RETURNING tier_code, perk_code, yearly_quota, monthly_cap, required_tag, updated_at
"""
DELETE_ENTITLEMENT = """
DELETE FROM entitlements WHERE tier_code = $1::text AND perk_code = $2::text
RETURNING tier_code, perk_code, yearly_quota, monthly_cap, required_tag, updated_at
"""
SELECT_ENTITLEMENTS = """
SELECT tier_code, perk_code, yearly_quota, monthly_cap, required_tag, updated_at FROM entitlements
WHERE tier_code = $1::text AND ($2::text IS NULL OR perk_code COLLATE "C" > $2)
ORDER BY perk_code COLLATE "C" LIMIT $3
"""


def entitlement_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An entitlement as the API shows it (``yearly_quota`` null: unlimited; ``monthly_cap`` null: no cap)."""
    return {
        "tier": row["tier_code"],
        "perk": row["perk_code"],
        "yearly_quota": row["yearly_quota"],
        "monthly_cap": row["monthly_cap"],
        "required_tag": row["required_tag"],
        "updated_at": row["updated_at"],
    }


async def put_entitlement(
    conn: asyncpg.Connection,
    actor: Principal,
    tier: str,
    perk: str,
    *,
    yearly_quota: int | None,
    monthly_cap: int | None,
    required_tag: str | None = None,
) -> dict[str, Any]:
    """Grant ``perk`` to ``tier`` (or replace the grant), to clients with ``required_tag`` only when one is given;
    404 for an unknown tier or perk."""
    async with conn.transaction():
        if await conn.fetchval(LOCK_TIER_CODE, tier) is None or await conn.fetchval(SELECT_PERK_CODE, perk) is None:
            raise NotFound()
        previous = await conn.fetchrow(SELECT_ENTITLEMENT, tier, perk)
        with constraint_errors(CATALOGUE_CONSTRAINTS):
            row = await conn.fetchrow(UPSERT_ENTITLEMENT, tier, perk, yearly_quota, monthly_cap, required_tag)
        view = entitlement_view(row)
        before = entitlement_view(previous) if previous else None
        await audit.record(conn, actor, "entitlement.put", "entitlement", f"{tier}/{perk}", before, view)
    return view


async def delete_entitlement(conn: asyncpg.Connection, actor: Principal, tier: str, perk: str) -> None:
    """Withdraw ``perk`` from ``tier``; 404 when the tier had no such entitlement."""
    async with conn.transaction():
        if await conn.fetchval(LOCK_TIER_CODE, tier) is None:
            raise NotFound()
        row = await conn.fetchrow(DELETE_ENTITLEMENT, tier, perk)
        if row is None:
            raise NotFound()
        before = entitlement_view(row)
        await audit.record(conn, actor, "entitlement.delete", "entitlement", f"{tier}/{perk}", before, None)


async def list_entitlements(
    conn: asyncpg.Connection, tier: str, after_perk: str | None, limit: int
) -> list[dict[str, Any]]:
    """A tier's entitlements in order of perk code; 404 for an unknown tier."""
    if await conn.fetchval(SELECT_TIER_CODE, tier) is None:
        raise NotFound()
    return [entitlement_view(row) for row in await conn.fetch(SELECT_ENTITLEMENTS, tier, after_perk, limit)]
