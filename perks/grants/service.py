"""Grants: given to a client by bank staff (audited, with a ``grant.created`` event), listed, revoked.

Redeeming draws on them (tier quota first, then the soonest-expiring grant); that part lives with redemption."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import BANK_STAFF_WRITERS, Principal
from perks.core.errors import BadRequest, Conflict, NotFound
from perks.core.pagination import time_id_after
from perks.events.service import record_event

COLUMNS = """id, client_id, perk_code, quantity, used, expires_on, reason, status, created_at, revoked_at,
             revoke_reason"""
CLIENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)"
PERK_EXISTS = "SELECT EXISTS (SELECT 1 FROM perks WHERE code = $1::text)"
INSERT_GRANT = f"""
INSERT INTO grants (client_id, perk_code, quantity, expires_on, reason, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {COLUMNS}
"""
SELECT_GRANTS = f"""
SELECT {COLUMNS} FROM grants
WHERE client_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4
"""
LOCK_GRANT = f"SELECT {COLUMNS} FROM grants WHERE id = $1 FOR NO KEY UPDATE"
REVOKE_GRANT = f"""
UPDATE grants SET status = 'revoked', revoked_at = $2, revoked_by = $3, revoke_reason = $4 WHERE id = $1
RETURNING {COLUMNS}
"""


def grant_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A grant as bank staff see it; ``remaining`` is what is left of its quantity (expired or not)."""
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "perk": row["perk_code"],
        "quantity": row["quantity"],
        "used": row["used"],
        "remaining": row["quantity"] - row["used"],
        "expires_on": row["expires_on"],
        "reason": row["reason"],
        "status": row["status"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "revoke_reason": row["revoke_reason"],
    }


def _user_id(actor: Principal) -> UUID | None:
    # Only staff give or revoke grants; the command line (SYSTEM) has no user row.
    return UUID(str(actor.id)) if actor.id and actor.role in BANK_STAFF_WRITERS else None


async def create_grant(
    conn: asyncpg.Connection, actor: Principal, client_id: UUID, *, perk: str, quantity: int, expires_on: date,
    reason: str, now: datetime, today: date,
) -> dict[str, Any]:
    """Give ``client_id`` ``quantity`` uses of ``perk`` until the end of ``expires_on`` (bank time zone).

    404 for an unknown client; 400 naming ``perk`` for an unknown perk and ``expires_on`` for a date before
    ``today`` (the bank's date)."""
    if expires_on < today:
        raise BadRequest({"expires_on": "must not be in the past"})
    async with conn.transaction():
        if not await conn.fetchval(CLIENT_EXISTS, client_id):
            raise NotFound()
        if not await conn.fetchval(PERK_EXISTS, perk):
            raise BadRequest({"perk": "no such perk"})
        row = await conn.fetchrow(INSERT_GRANT, client_id, perk, quantity, expires_on, reason, now, _user_id(actor))
        view = grant_view(row)
        await audit.record(conn, actor, "grant.create", "grant", row["id"], None, view)
        await record_event(conn, "grant.created", now, {
            "grant_id": view["id"], "client_id": view["client_id"], "perk": perk, "quantity": quantity,
            "expires_on": expires_on.isoformat(),
        })
    return view


async def list_grants(
    conn: asyncpg.Connection, client_id: UUID, *, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """A client's grants, oldest first; 404 for an unknown client."""
    if not await conn.fetchval(CLIENT_EXISTS, client_id):
        raise NotFound()
    created_at, last_id = time_id_after(after)
    return [grant_view(row) for row in await conn.fetch(SELECT_GRANTS, client_id, created_at, last_id, limit)]


async def revoke_grant(
    conn: asyncpg.Connection, actor: Principal, grant_id: UUID, *, reason: str, now: datetime
) -> dict[str, Any]:
    """Revoke a grant: what is left of it can no longer be used (uses already made stand; a void of one of them
    gives nothing back to it). 409 ``conflict`` when it is already revoked."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_GRANT, grant_id)
        if row is None:
            raise NotFound()
        if row["status"] == "revoked":
            raise Conflict(message="This grant is already revoked.")
        before = grant_view(row)
        after = grant_view(await conn.fetchrow(REVOKE_GRANT, grant_id, now, _user_id(actor), reason))
        await audit.record(conn, actor, "grant.revoke", "grant", grant_id, before, after)
    return after
