"""Changing an account: disable or enable it, set its password, change its role (or a cashier's store).

Whatever would let an older session token act differently from the account as it now is (a disable, a new password,
another role or store) bumps the user's session generation, so that every older token is refused at once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from perks.accounts.service import (
    SELECT_MERCHANT_STATUS,
    SELECT_STORE_OF_MERCHANT,
    check_new_credentials,
    ensure_merchant_writable,
    user_view,
)
from perks.audit import service as audit
from perks.core.auth import MERCHANT_ROLES, STAFF_ROLES, Principal
from perks.core.errors import BadRequest, NotFound
from perks.core.pagination import time_id_after
from perks.core.passwords import hash_password
from perks.core.updates import constraint_errors

# A sentinel: "store_id not given" differs from "no store".
UNCHANGED: Any = object()

USER_CONSTRAINTS = {
    "users_check": "role",
    "users_role_check": "role",
    "users_status_check": "status",
    "users_merchant_id_store_id_fkey": "store_id",
}

USER_COLUMNS = "id, username, role, merchant_id, store_id, status, created_at"
SELECT_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"
LOCK_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR NO KEY UPDATE"
UPDATE_USER = f"""
UPDATE users SET status = $2, role = $3, store_id = $4, password_hash = COALESCE($5, password_hash),
                 session_generation = session_generation + $6, updated_at = now()
WHERE id = $1
RETURNING {USER_COLUMNS}
"""
SELECT_STAFF = f"""
SELECT {USER_COLUMNS} FROM users
WHERE merchant_id IS NULL AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
ORDER BY created_at, id LIMIT $3
"""


async def list_staff(conn: asyncpg.Connection, after: list[Any] | None, limit: int) -> list[asyncpg.Record]:
    """The bank's staff accounts, oldest first."""
    created_at, last_id = time_id_after(after)
    return await conn.fetch(SELECT_STAFF, created_at, last_id, limit)


async def get_user(conn: asyncpg.Connection, user_id: UUID, merchant_id: UUID | None = None) -> dict[str, Any]:
    """A staff user (``merchant_id`` None) or a user of ``merchant_id``; 404 for any other."""
    row = await conn.fetchrow(SELECT_USER, user_id)
    if row is None or row["merchant_id"] != merchant_id:
        raise NotFound()
    return user_view(row)


async def update_user(
    conn: asyncpg.Connection,
    actor: Principal,
    user_id: UUID,
    *,
    merchant_id: UUID | None = None,
    status: str | None = None,
    password: str | None = None,
    role: str | None = None,
    store_id: UUID | None = UNCHANGED,
) -> dict[str, Any]:
    """Change a staff user (``merchant_id`` None) or a user of ``merchant_id``; audited, never the password.

    Nobody disables their own account or changes their own role (so that no one locks themselves out by mistake);
    a suspended merchant's manager changes nothing (403 ``merchant_suspended``)."""
    if merchant_id is not None:
        ensure_merchant_writable(actor, await conn.fetchval(SELECT_MERCHANT_STATUS, merchant_id))
    current = await get_user(conn, user_id, merchant_id)
    if password is not None:
        check_new_credentials(current["username"], password)
    _check_role(current, merchant_id, role)
    if actor.id == current["id"]:
        if status == "disabled":
            raise BadRequest({"status": "you cannot disable your own account"})
        if role is not None and role != current["role"]:
            raise BadRequest({"role": "you cannot change your own role"})
    password_hash = await hash_password(password) if password is not None else None
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_USER, user_id)
        if row is None:
            raise NotFound()
        before = user_view(row)
        new_role = role or row["role"]
        new_store = await _store_for(conn, merchant_id, (row["role"], new_role), row["store_id"], store_id)
        new_status = status or row["status"]
        moved = (new_role, new_store) != (row["role"], row["store_id"])
        disabled = new_status == "disabled" and row["status"] != "disabled"
        if not (moved or disabled or password_hash or new_status != row["status"]):
            return before
        bump = 1 if (moved or disabled or password_hash) else 0
        with constraint_errors(USER_CONSTRAINTS):
            row = await conn.fetchrow(UPDATE_USER, user_id, new_status, new_role, new_store, password_hash, bump)
        after = user_view(row)
        recorded = after | ({"password_changed": True} if password_hash else {}) | {"sessions_revoked": bool(bump)}
        await audit.record(conn, actor, "user.update", "user", user_id, before, recorded)
    return after


def _check_role(current: dict[str, Any], merchant_id: UUID | None, role: str | None) -> None:
    if role is None:
        return
    allowed = STAFF_ROLES if merchant_id is None else MERCHANT_ROLES
    if role not in allowed:
        # A staff account cannot become a merchant's user, nor the reverse: that would move it between realms.
        raise BadRequest({"role": "must be one of " + ", ".join(sorted(allowed))})


async def _store_for(
    conn: asyncpg.Connection,
    merchant_id: UUID | None,
    roles: tuple[str, str],
    current: UUID | None,
    given: UUID | None,
) -> UUID | None:
    old_role, role = roles
    if role != "cashier":
        if given is not UNCHANGED and given is not None:
            raise BadRequest({"store_id": "only a cashier belongs to a store"})
        # A manager answers for every store of its merchant (a cashier made manager leaves its store).
        return current if old_role == role else None
    store = current if given is UNCHANGED else given
    if store is None:
        raise BadRequest({"store_id": "required for a cashier"})
    if store != current and not await conn.fetchval(SELECT_STORE_OF_MERCHANT, store, merchant_id):
        raise BadRequest({"store_id": "not a store of this merchant"})
    return store
