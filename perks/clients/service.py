"""Clients: the bank's clients enrolled in the program, their tier and whether they are blocked."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.clients.tiers import record_tier_change
from perks.audit.changes import AuditedRow, audited_insert, audited_update
from perks.core.auth import Principal
from perks.core.errors import BadRequest, NotFound
from perks.core.pagination import time_id_after
from perks.events.service import record_event

STATUSES = ("active", "blocked")
EARLIEST_BIRTHDAY = date(1900, 1, 1)

CLIENT_CONSTRAINTS = {
    "clients_external_ref_key": "external_ref",
    "clients_external_ref_check": "external_ref",
    "clients_name_check": "name",
    "clients_phone_check": "phone",
    "clients_status_check": "status",
    "clients_tier_code_fkey": "tier",
    "code_check": "tier",
    "tier_code": "tier",
}

INSERT_CLIENT = """
INSERT INTO clients (external_ref, name, phone, birthday, tier_code) VALUES ($1, $2, $3, $4, $5)
RETURNING id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at,
          tier_override_until, tags
"""
SELECT_CLIENT = """
SELECT id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at, tier_override_until,
       tags
FROM clients WHERE id = $1
"""
LOCK_CLIENT = """
SELECT id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at, tier_override_until,
       tags
FROM clients WHERE id = $1 FOR NO KEY UPDATE
"""
UPDATE_CLIENT = """
UPDATE clients SET name = $2, phone = $3, birthday = $4, tier_code = $5, status = $6, updated_at = now()
WHERE id = $1
RETURNING id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at,
          tier_override_until, tags
"""
END_CLIENT_SESSIONS = "UPDATE clients SET session_generation = session_generation + 1 WHERE id = $1"
SELECT_CLIENTS = """
SELECT id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at, tier_override_until,
       tags
FROM clients
WHERE ($1::text IS NULL OR external_ref = $1)
  AND ($2::text IS NULL OR tier_code = $2::text)
  AND ($3::text IS NULL OR status = $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
  AND ($7::text IS NULL OR tags @> ARRAY[$7::code])
ORDER BY created_at, id
LIMIT $6
"""
UPDATE_TAGS = """
UPDATE clients SET tags = $2::code[], updated_at = now() WHERE id = $1
RETURNING id, external_ref, name, phone, birthday, tier_code, status, created_at, updated_at, tier_override_until, tags
"""


def client_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A client as bank staff see it."""
    return {
        "id": str(row["id"]),
        "external_ref": row["external_ref"],
        "name": row["name"],
        "phone": row["phone"],
        "birthday": row["birthday"],
        "tier": row["tier_code"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "tier_override_until": row["tier_override_until"],
        "tags": list(row["tags"]),
    }


# The fields a change may set, in UPDATE_CLIENT's order (tags have their own statement, the reference never changes).
CLIENT_ROW = AuditedRow(
    "client", LOCK_CLIENT, UPDATE_CLIENT, ("name", "phone", "birthday", "tier", "status"), client_view, CLIENT_CONSTRAINTS
)


def _check_birthday(birthday: date | None, today: date | None) -> None:
    if birthday is None:
        return
    if birthday < EARLIEST_BIRTHDAY:
        raise BadRequest({"birthday": f"must not be before {EARLIEST_BIRTHDAY.isoformat()}"})
    if birthday > (today or date.today()):
        raise BadRequest({"birthday": "must not be in the future"})


async def create_client(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    external_ref: str,
    name: str,
    phone: str | None = None,
    birthday: date | None = None,
    tier: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Enrol a client (active); 409 when ``external_ref`` is taken, 400 for an unknown tier.

    ``today`` is the bank's date, against which a birthday must not lie in the future."""
    _check_birthday(birthday, today)
    return await audited_insert(conn, actor, CLIENT_ROW, INSERT_CLIENT, external_ref, name, phone, birthday, tier)


async def get_client(conn: asyncpg.Connection, client_id: UUID) -> dict[str, Any]:
    """One client; 404 when there is none with that id."""
    row = await conn.fetchrow(SELECT_CLIENT, client_id)
    if row is None:
        raise NotFound()
    return client_view(row)


async def list_clients(
    conn: asyncpg.Connection,
    *,
    external_ref: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    after: list[Any] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Clients matching the filters (``tag``: those carrying it), oldest first, after the ``(created_at, id)`` key
    ``after``."""
    created_at, last_id = time_id_after(after)
    rows = await conn.fetch(SELECT_CLIENTS, external_ref, tier, status, created_at, last_id, limit, tag)
    return [client_view(row) for row in rows]


async def update_client(
    conn: asyncpg.Connection, actor: Principal, client_id: UUID, *, today: date | None = None,
    now: datetime | None = None, **changes: Any
) -> dict[str, Any]:
    """Change a client's name, phone, birthday, tier (None: no tier) or status; audited when anything differs.

    A tier change applies at once: from then on the client is entitled to what the new tier grants; it joins the
    tier history (reason ``manual``), and the next tier evaluation may change it unless an override holds."""
    if "birthday" in changes:
        _check_birthday(changes["birthday"], today)
    async def after_change(conn: asyncpg.Connection, before: dict[str, Any], after: dict[str, Any]) -> None:
        if after["status"] == "blocked" and before["status"] != "blocked":
            # A block ends the client's sessions at once; unblocking later does not bring the old ones back.
            await conn.execute(END_CLIENT_SESSIONS, client_id)
        await record_tier_change(conn, actor, client_id, before["tier"], after["tier"])
        await record_manual_tier_change(conn, client_id, before["tier"], after["tier"], now)

    return await audited_update(conn, actor, CLIENT_ROW, (client_id,), changes, after_change=after_change)


async def record_manual_tier_change(
    conn: asyncpg.Connection, client_id: UUID, from_tier: str | None, to_tier: str | None, now: datetime | None
) -> None:
    """Write the ``client.tier_changed`` event (cause ``manual``) of a tier staff changed, if it changed."""
    if from_tier == to_tier:
        return
    await record_event(conn, "client.tier_changed", now or datetime.now(timezone.utc), {
        "client_id": str(client_id), "from_tier": from_tier, "to_tier": to_tier, "cause": "manual",
    })


async def set_tags(conn: asyncpg.Connection, actor: Principal, client_id: UUID, tags: list[str]) -> dict[str, Any]:
    """Replace a client's tags (segments) with ``tags`` (already checked, distinct); audited when they differ."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_CLIENT, client_id)
        if row is None:
            raise NotFound()
        before = client_view(row)
        if before["tags"] == tags:
            return before
        after = client_view(await conn.fetchrow(UPDATE_TAGS, client_id, tags))
        await audit.record(conn, actor, "client.tags", "client", client_id, before, after)
    return after
