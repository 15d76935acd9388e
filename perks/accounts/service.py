"""Accounts: staff and merchant users, logins with throttling, client sessions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import BadRequest, Conflict, NotFound, TooManyAttempts, Unauthorized
from perks.core.pagination import time_id_after
from perks.core.passwords import hash_password, verify_password

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)

COUNT_RECENT_FAILURES = """
SELECT count(*) FROM login_failures WHERE username = $1 AND failed_at > $2
"""
RECORD_FAILURE = "INSERT INTO login_failures (username, failed_at) VALUES ($1, $2)"
FORGET_OLD_FAILURES = "DELETE FROM login_failures WHERE failed_at < $1"
SELECT_USER_BY_USERNAME = """
SELECT id, username, password_hash, role, merchant_id, store_id FROM users WHERE username = $1
"""


async def login(conn: asyncpg.Connection, username: str, password: str, now: datetime) -> Principal:
    """The principal for a correct username and password; throttled after repeated failures."""
    failures = await conn.fetchval(COUNT_RECENT_FAILURES, username, now - FAILURE_WINDOW)
    if failures >= MAX_FAILURES:
        retry_after = int(FAILURE_WINDOW.total_seconds())
        error = TooManyAttempts(details={"retry_after_seconds": retry_after})
        error.headers["Retry-After"] = str(retry_after)
        raise error
    row = await conn.fetchrow(SELECT_USER_BY_USERNAME, username)
    if not await verify_password(row["password_hash"] if row else None, password):
        await conn.execute(RECORD_FAILURE, username, now)
        await conn.execute(FORGET_OLD_FAILURES, now - timedelta(days=1))
        raise Unauthorized("invalid_credentials")
    assert row is not None
    return Principal(
        id=str(row["id"]),
        role=row["role"],
        username=row["username"],
        merchant_id=str(row["merchant_id"]) if row["merchant_id"] else None,
        store_id=str(row["store_id"]) if row["store_id"] else None,
    )


INSERT_USER = """
INSERT INTO users (username, password_hash, role, merchant_id, store_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, username, role, merchant_id, store_id, created_at
"""


def user_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    view: dict[str, Any] = {"id": str(row["id"]), "username": row["username"], "role": row["role"]}
    if row["role"] in ("manager", "cashier"):
        view["merchant_id"] = str(row["merchant_id"])
        view["store_id"] = str(row["store_id"]) if row["store_id"] else None
    return view


async def create_user(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    username: str,
    password: str,
    role: str,
    merchant_id: UUID | None = None,
    store_id: UUID | None = None,
) -> dict[str, Any]:
    """Create a staff or merchant user; 409 when the username is taken."""
    password_hash = await hash_password(password)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(INSERT_USER, username, password_hash, role, merchant_id, store_id)
        except asyncpg.UniqueViolationError:
            raise Conflict(details={"fields": {"username": "already taken"}}) from None
        view = user_view(row)
        await audit.record(conn, actor, "user.create", "user", row["id"], None, view)
    return view


SELECT_MERCHANT_STATUS = "SELECT status FROM merchants WHERE id = $1"
SELECT_STORE_OF_MERCHANT = "SELECT 1 FROM stores WHERE id = $1 AND merchant_id = $2"


async def create_merchant_user(
    conn: asyncpg.Connection,
    actor: Principal,
    merchant_id: UUID,
    *,
    username: str,
    password: str,
    role: str,
    store_id: UUID | None,
) -> dict[str, Any]:
    """Create a manager or cashier of ``merchant_id``; a cashier needs one of its stores."""
    if await conn.fetchval(SELECT_MERCHANT_STATUS, merchant_id) is None:
        raise NotFound()
    if role == "cashier" and store_id is None:
        raise BadRequest({"store_id": "required for a cashier"})
    if store_id is not None and not await conn.fetchval(SELECT_STORE_OF_MERCHANT, store_id, merchant_id):
        raise BadRequest({"store_id": "not a store of this merchant"})
    return await create_user(
        conn, actor, username=username, password=password, role=role, merchant_id=merchant_id, store_id=store_id
    )


SELECT_MERCHANT_USERS = """
SELECT id, username, role, merchant_id, store_id, created_at FROM users
WHERE merchant_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4
"""


async def list_merchant_users(
    conn: asyncpg.Connection, merchant_id: UUID, after: list[Any] | None, limit: int
) -> list[asyncpg.Record]:
    """The users of one merchant, oldest first."""
    if await conn.fetchval(SELECT_MERCHANT_STATUS, merchant_id) is None:
        raise NotFound()
    created_at, last_id = time_id_after(after)
    return await conn.fetch(SELECT_MERCHANT_USERS, merchant_id, created_at, last_id, limit)


SELECT_CLIENT_FOR_SESSION = "SELECT id, status FROM clients WHERE id = $1"


async def client_principal(conn: asyncpg.Connection, actor: Principal, client_id: UUID) -> Principal:
    """The principal of a client, for a session minted by bank staff; the minting is audited."""
    row = await conn.fetchrow(SELECT_CLIENT_FOR_SESSION, client_id)
    if row is None:
        raise NotFound()
    async with conn.transaction():
        await audit.record(conn, actor, "client.session", "client", client_id, None, {"client_id": str(client_id)})
    return Principal(id=str(client_id), role="client")
