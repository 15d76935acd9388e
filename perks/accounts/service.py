"""Accounts: staff and merchant users, logins with throttling, client sessions."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from perks.audit import service as audit
from perks.core.auth import MERCHANT_ROLES, STAFF_ROLES, Principal
from perks.core.errors import ApiError, BadRequest, Conflict, NotFound, TooManyAttempts, Unauthorized
from perks.core.pagination import time_id_after
from perks.core.passwords import hash_password, verify_password

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)

USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 256
# Passwords long enough to pass the length rule that every guessing list tries first.
COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "passw0rd", "12345678", "123456789", "1234567890",
        "87654321", "11111111", "00000000", "88888888", "66666666", "qwertyui", "qwerty123", "qwertyuiop",
        "abcdefgh", "abcd1234", "1qaz2wsx", "iloveyou", "admin123", "administrator", "letmein1", "welcome1",
        "changeme", "sunshine", "football", "baseball", "trustno1", "superman",
    }
)

# The two-key advisory lock space (so it never meets the one-key lock the migrations take).
LOGIN_LOCK_CLASS = 7265

LOCK_USERNAME = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
SELECT_RECENT_FAILURES = """
SELECT failed_at FROM login_failures WHERE username = $1 AND failed_at > $2
ORDER BY failed_at DESC LIMIT $3
"""
RECORD_FAILURE = "INSERT INTO login_failures (username, failed_at) VALUES ($1, $2) RETURNING id"
FORGET_ATTEMPT = "DELETE FROM login_failures WHERE id = $1"
FORGET_OLD_FAILURES = "DELETE FROM login_failures WHERE failed_at < $1"
SELECT_USER_BY_USERNAME = """
SELECT id, username, password_hash, role, merchant_id, store_id, status, session_generation
FROM users WHERE username = $1
"""


async def login(conn: asyncpg.Connection, username: str, password: str, now: datetime) -> Principal:
    """The principal for a correct username and password of an active user; throttled after repeated failures.

    A disabled user's right password is refused exactly as a wrong one is (same hashing, same failure count)."""
    if "\x00" in username:
        # PostgreSQL text cannot hold NUL, so no such user exists (and none can be throttled).
        await verify_password(None, password)
        raise Unauthorized("invalid_credentials")
    attempt_id = await _reserve_attempt(conn, username, now)
    row = await conn.fetchrow(SELECT_USER_BY_USERNAME, username)
    matches = await verify_password(row["password_hash"] if row else None, password)
    if not matches or row is None or row["status"] != "active":
        await conn.execute(FORGET_OLD_FAILURES, now - timedelta(days=1))
        raise Unauthorized("invalid_credentials")
    assert row is not None
    await conn.execute(FORGET_ATTEMPT, attempt_id)
    return Principal(
        id=str(row["id"]),
        role=row["role"],
        username=row["username"],
        merchant_id=str(row["merchant_id"]) if row["merchant_id"] else None,
        store_id=str(row["store_id"]) if row["store_id"] else None,
        session_generation=row["session_generation"],
    )


async def _reserve_attempt(conn: asyncpg.Connection, username: str, now: datetime) -> int:
    # The attempt counts as a failure before the password is checked (and is forgotten if it was
    # right), under a per-username lock: parallel guesses cannot slip past the limit together.
    async with conn.transaction():
        await conn.execute(LOCK_USERNAME, LOGIN_LOCK_CLASS, username)
        recent = await conn.fetch(SELECT_RECENT_FAILURES, username, now - FAILURE_WINDOW, MAX_FAILURES)
        if len(recent) >= MAX_FAILURES:
            unlocks_at = recent[-1]["failed_at"] + FAILURE_WINDOW
            retry_after = str(max(1, math.ceil((unlocks_at - now).total_seconds())))
            raise TooManyAttempts(
                details={"retry_after_seconds": int(retry_after)}, headers={"Retry-After": retry_after}
            )
        return await conn.fetchval(RECORD_FAILURE, username, now)


def check_new_credentials(username: str, password: str) -> None:
    """400 naming the field when a new account's username or password is not acceptable."""
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise BadRequest({"username": "1 to 64 letters, digits or _ . @ -"})
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise BadRequest({"password": f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"})
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or lowered == username.lower() or len(set(password)) < 3:
        raise BadRequest({"password": "too easy to guess"})


INSERT_USER = """
INSERT INTO users (username, password_hash, role, merchant_id, store_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, username, role, merchant_id, store_id, status, created_at
"""


def user_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    view: dict[str, Any] = {
        "id": str(row["id"]),
        "username": row["username"],
        "role": row["role"],
        "status": row["status"],
    }
    if row["role"] in MERCHANT_ROLES:
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
    """Create a staff or merchant user; 400 for a weak password, 409 when the username is taken."""
    check_new_credentials(username, password)
    if role not in STAFF_ROLES | MERCHANT_ROLES:
        raise BadRequest({"role": "not a role"})
    if (role in MERCHANT_ROLES) != (merchant_id is not None):
        raise BadRequest({"role": "merchant users, and only they, belong to a merchant"})
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


def ensure_merchant_writable(actor: Principal, merchant_status: str | None) -> None:
    """404 for no such merchant; 403 ``merchant_suspended`` when a suspended merchant's own user changes anything.

    Suspension stops a merchant's staff from changing the program (users, redemptions, voids); reading lists,
    usage and statements stays allowed, and bank staff may still act on the merchant."""
    if merchant_status is None:
        raise NotFound()
    if merchant_status != "active" and actor.role in MERCHANT_ROLES:
        raise ApiError("merchant_suspended", status=403)


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
    """Create a manager or cashier of ``merchant_id``; a cashier needs one of its stores.

    A manager of a suspended merchant may not (403 ``merchant_suspended``); bank staff still may."""
    ensure_merchant_writable(actor, await conn.fetchval(SELECT_MERCHANT_STATUS, merchant_id))
    if role not in MERCHANT_ROLES:
        raise BadRequest({"role": "must be manager or cashier"})
    if role == "cashier" and store_id is None:
        raise BadRequest({"store_id": "required for a cashier"})
    if store_id is not None and not await conn.fetchval(SELECT_STORE_OF_MERCHANT, store_id, merchant_id):
        raise BadRequest({"store_id": "not a store of this merchant"})
    return await create_user(
        conn, actor, username=username, password=password, role=role, merchant_id=merchant_id, store_id=store_id
    )


SELECT_MERCHANT_USERS = """
SELECT id, username, role, merchant_id, store_id, status, created_at FROM users
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


SELECT_CLIENT_FOR_SESSION = "SELECT id, status, session_generation FROM clients WHERE id = $1"


async def client_principal(conn: asyncpg.Connection, actor: Principal, client_id: UUID) -> Principal:
    """The principal of a client, for a session minted by bank staff; the minting is audited.

    A blocked client gets none (403 ``client_blocked``)."""
    async with conn.transaction():
        row = await conn.fetchrow(SELECT_CLIENT_FOR_SESSION, client_id)
        if row is None:
            raise NotFound()
        if row["status"] != "active":
            raise ApiError("client_blocked", status=403)
        await audit.record(conn, actor, "client.session", "client", client_id, None, {"client_id": str(client_id)})
    return Principal(id=str(client_id), role="client", session_generation=row["session_generation"])
