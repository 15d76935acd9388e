"""Ending sessions: logging out, and a user's change of their own password.

A session token carries its account's session generation (claim ``gen``); bumping the stored generation refuses
every token issued before, on every worker and host, at the next request (the check reads the row by primary key).
Logging out therefore ends every session of that account on every device, not only this browser's: no table of
revoked tokens to grow, purge and read on every request, and a user who fears a copied token is rid of it too."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from perks.accounts.service import check_new_credentials, login
from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import BadRequest, Unauthorized
from perks.core.passwords import hash_password

REVOKE_USER_SESSIONS = """
UPDATE users SET session_generation = session_generation + 1 WHERE id = $1 AND session_generation = $2
RETURNING session_generation
"""
REVOKE_CLIENT_SESSIONS = """
UPDATE clients SET session_generation = session_generation + 1 WHERE id = $1 AND session_generation = $2
RETURNING session_generation
"""
SET_OWN_PASSWORD = """
UPDATE users SET password_hash = $2, session_generation = session_generation + 1, updated_at = now()
WHERE id = $1 AND status = 'active'
RETURNING session_generation
"""


async def log_out(conn: asyncpg.Connection, principal: Principal, at: datetime) -> None:
    """End every session of ``principal``'s account (a no-op when its token is already stale); audited."""
    query = REVOKE_CLIENT_SESSIONS if principal.role == "client" else REVOKE_USER_SESSIONS
    entity = "client" if principal.role == "client" else "user"
    async with conn.transaction():
        generation = await conn.fetchval(query, UUID(principal.id), principal.session_generation)
        if generation is not None:
            after = {"session_generation": generation}
            await audit.record(conn, principal, f"{entity}.logout", entity, principal.id, None, after, at=at)


async def change_own_password(
    conn: asyncpg.Connection, principal: Principal, current_password: str, new_password: str, now: datetime
) -> Principal:
    """Set a new password for the principal's own account, given its current one; every older session ends.

    The current password is checked as a login is (throttled per username): a stolen session token alone cannot
    take over the account. Returns the principal with its new generation, for a fresh session token."""
    if principal.username is None or principal.role == "client":
        raise Unauthorized()
    try:
        checked = await login(conn, principal.username, current_password, now)
    except Unauthorized:
        raise BadRequest({"current_password": "wrong password"}) from None
    if checked.id != principal.id:
        raise Unauthorized()
    check_new_credentials(principal.username, new_password)
    if new_password == current_password:
        raise BadRequest({"new_password": "must differ from the current password"})
    password_hash = await hash_password(new_password)
    async with conn.transaction():
        generation = await conn.fetchval(SET_OWN_PASSWORD, UUID(principal.id), password_hash)
        if generation is None:
            raise Unauthorized()
        after = {"password_changed": True, "sessions_revoked": True}
        await audit.record(conn, principal, "user.password_change", "user", principal.id, None, after, at=now)
    return Principal(
        id=checked.id,
        role=checked.role,
        username=checked.username,
        merchant_id=checked.merchant_id,
        store_id=checked.store_id,
        session_generation=generation,
    )
