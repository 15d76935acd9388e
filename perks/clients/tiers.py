"""A client's tier set by hand: overrides that hold against evaluation until a given instant, plain changes, and
the tier history that every change of a client's tier joins."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import BadRequest, NotFound
from perks.core.updates import constraint_errors

# Overrides and plain changes ----------------------------------------------------------------------------------

TIER_CONSTRAINTS = {"clients_tier_code_fkey": "tier", "code_check": "tier", "tier_code": "tier"}

LOCK_CLIENT_TIER = """
SELECT id, tier_code, tier_override_until FROM clients WHERE id = $1 FOR NO KEY UPDATE
"""
UPDATE_CLIENT_TIER = """
UPDATE clients SET tier_code = $2, tier_override_until = $3, updated_at = now() WHERE id = $1
RETURNING id, tier_code, tier_override_until
"""
# The tier history: every change of a client's tier, whoever made it. Evaluation writes its own rows (with the
# points that decided them) inside its one set-based statement; every other change is written by the two below.
INSERT_CHANGE = """
INSERT INTO tier_history (client_id, from_tier, to_tier, reason, override_until, changed_at, actor_id,
                          actor_username, actor_role)
VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()), $7, $8, $9)
"""
# ``{source}`` is a constant SELECT of the caller's giving ``client_id, from_tier, to_tier``, never input.
INSERT_CHANGES = """
INSERT INTO tier_history (client_id, from_tier, to_tier, reason, changed_at, actor_id, actor_username, actor_role)
SELECT s.client_id, s.from_tier, s.to_tier, $1, COALESCE($2, now()), $3, $4, $5 FROM ({source}) s
WHERE s.from_tier IS DISTINCT FROM s.to_tier
"""


async def record_tier_change(
    conn: asyncpg.Connection,
    actor: Principal,
    client_id: UUID,
    from_tier: str | None,
    to_tier: str | None,
    reason: str = "manual",
    changed_at: datetime | None = None,
) -> None:
    """Add a tier change made elsewhere (``PATCH /clients/{id}`` with a ``tier``) to the history; call it in the
    change's own transaction. ``changed_at`` defaults to the database's time."""
    if from_tier != to_tier:
        await _insert_change(conn, actor, client_id, from_tier, to_tier, reason, None, changed_at)


async def record_tier_changes(
    conn: asyncpg.Connection,
    actor: Principal,
    source: str,
    *,
    reason: str,
    changed_at: datetime | None = None,
    timeout: float | None = None,
) -> None:
    """Add the tier changes that the constant query ``source`` selects (``client_id, from_tier, to_tier``, no
    parameters) to the history in one statement, those that change nothing left out: a bulk
    :func:`record_tier_change`. Call it in the changes' own transaction."""
    query = INSERT_CHANGES.format(source=source)
    await conn.execute(query, reason, changed_at, *audit.actor_columns(actor), timeout=timeout)


async def _insert_change(
    conn: asyncpg.Connection,
    actor: Principal,
    client_id: UUID,
    from_tier: str | None,
    to_tier: str | None,
    reason: str,
    override_until: datetime | None,
    changed_at: datetime | None,
) -> None:
    actor_id, username, role = audit.actor_columns(actor)
    await conn.execute(
        INSERT_CHANGE, client_id, from_tier, to_tier, reason, override_until, changed_at, actor_id, username, role
    )


def _tier_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(row["id"]), "tier": row["tier_code"], "tier_override_until": row["tier_override_until"]}


async def set_tier_override(
    conn: asyncpg.Connection,
    actor: Principal,
    client_id: UUID,
    tier: str | None,
    until: datetime | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Set a client's tier by hand: held against evaluation until ``until`` (reason ``override``), or, with
    ``until`` None, a plain change that the next evaluation may undo (reason ``manual``; any hold is lifted).

    ``tier`` None means no tier. Recorded in the tier history and audited. Returns ``{id, tier,
    tier_override_until}``; 404 for no such client, 400 naming ``tier`` or ``tier_override_until``."""
    if until is not None and until <= now:
        raise BadRequest({"tier_override_until": "must be in the future"})
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_CLIENT_TIER, client_id)
        if row is None:
            raise NotFound()
        before = _tier_view(row)
        with constraint_errors(TIER_CONSTRAINTS):
            row = await conn.fetchrow(UPDATE_CLIENT_TIER, client_id, tier, until)
        after = _tier_view(row)
        if after == before:
            return after
        reason = "override" if until is not None else "manual"
        await _insert_change(conn, actor, client_id, before["tier"], tier, reason, until, now)
        await audit.record(conn, actor, "client.tier_override", "client", client_id, before, after)
    return after


async def clear_tier_override(conn: asyncpg.Connection, actor: Principal, client_id: UUID) -> dict[str, Any]:
    """Lift a client's override (its tier stays until the next evaluation); audited when there was one."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_CLIENT_TIER, client_id)
        if row is None:
            raise NotFound()
        before = _tier_view(row)
        if row["tier_override_until"] is None:
            return before
        row = await conn.fetchrow(UPDATE_CLIENT_TIER, client_id, row["tier_code"], None)
        after = _tier_view(row)
        await audit.record(conn, actor, "client.tier_override", "client", client_id, before, after)
    return after


# The history ----------------------------------------------------------------------------------------------------

SELECT_HISTORY = """
SELECT id, client_id, from_tier, to_tier, reason, points, override_until, changed_at, actor_id, actor_username,
       actor_role
FROM tier_history
WHERE client_id = $1 AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3
"""
CLIENT_EXISTS = "SELECT 1 FROM clients WHERE id = $1"


def history_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One tier change as the API shows it."""
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "from_tier": row["from_tier"],
        "to_tier": row["to_tier"],
        "reason": row["reason"],
        "points": row["points"],
        "override_until": row["override_until"],
        "changed_at": row["changed_at"],
        "actor": {
            "id": str(row["actor_id"]) if row["actor_id"] else None,
            "username": row["actor_username"],
            "role": row["actor_role"],
        },
    }


async def tier_history(
    conn: asyncpg.Connection, client_id: UUID, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """A client's tier changes, newest first, older than ``before_id``; 404 for no such client."""
    if await conn.fetchval(CLIENT_EXISTS, client_id) is None:
        raise NotFound()
    return [history_view(row) for row in await conn.fetch(SELECT_HISTORY, client_id, before_id, limit)]
