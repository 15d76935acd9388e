"""Webhook subscriptions (admin): made, changed, paused, deleted, their secret rotated; their deliveries listed
and retried. Every change is audited (never the secret) and wakes the dispatchers of every worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence
from uuid import UUID, uuid4

import asyncpg

from perks.audit import service as audit
from perks.audit.changes import AuditedRow, audited_update
from perks.core.auth import Principal
from perks.core.errors import Conflict, NotFound
from perks.core.pagination import time_id_after
from perks.events.service import CHANNEL, HORIZON
from perks.webhooks.signing import encrypt_secret, new_secret

COLUMNS = "id, url, event_types, description, status, created_at, updated_at"

# Where a new subscription starts: after the last final event, so it hears of what happens from now on.
SELECT_LAST_FINAL_EVENT = """
WITH """ + HORIZON + """
SELECT tx, id FROM events, horizon WHERE tx < horizon.xmin ORDER BY tx DESC, id DESC LIMIT 1
"""
INSERT_WEBHOOK = f"""
INSERT INTO webhooks (id, url, event_types, description, secret_encrypted, cursor_tx, cursor_id, created_at,
                      updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
RETURNING {COLUMNS}
"""
SELECT_WEBHOOKS = f"""
SELECT {COLUMNS} FROM webhooks
WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
ORDER BY created_at, id LIMIT $3
"""
SELECT_WEBHOOK = f"SELECT {COLUMNS} FROM webhooks WHERE id = $1"
LOCK_WEBHOOK = f"SELECT {COLUMNS} FROM webhooks WHERE id = $1 FOR NO KEY UPDATE"
UPDATE_WEBHOOK = f"""
UPDATE webhooks SET url = $2, event_types = $3, description = $4, status = $5, updated_at = $6 WHERE id = $1
RETURNING {COLUMNS}
"""
UPDATE_SECRET = "UPDATE webhooks SET secret_encrypted = $2, updated_at = $3 WHERE id = $1"
DELETE_WEBHOOK = "DELETE FROM webhooks WHERE id = $1"
DELIVERY_COLUMNS = "id, webhook_id, event_id, status, attempts, last_status, last_error, next_attempt_at, created_at, " \
                   "delivered_at"
SELECT_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE webhook_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC LIMIT $5
"""
LOCK_DELIVERY = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE"
RETRY_DELIVERY = f"""
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = clock_timestamp(), retry_since = NULL
WHERE id = $1
RETURNING {DELIVERY_COLUMNS}
"""
WAKE_DISPATCHERS = "SELECT pg_notify($1, '')"


def webhook_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription as admins see it (the secret never)."""
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# The fields a change may set, in UPDATE_WEBHOOK's order; the instant of the change follows them.
WEBHOOK_ROW = AuditedRow("webhook", LOCK_WEBHOOK, UPDATE_WEBHOOK, ("url", "event_types", "description", "status"),
                         webhook_view)


def delivery_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One event's delivery to one subscription."""
    return {
        "id": str(row["id"]),
        "webhook_id": str(row["webhook_id"]),
        "event_id": str(row["event_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None,
        "created_at": row["created_at"],
        "delivered_at": row["delivered_at"],
    }


async def create_webhook(
    conn: asyncpg.Connection, actor: Principal, server_secret: str, *, url: str, event_types: Sequence[str],
    description: str | None, now: datetime,
) -> dict[str, Any]:
    """Subscribe ``url`` to ``event_types`` from now on; the view carries the new ``secret`` (only here)."""
    webhook_id, secret = uuid4(), new_secret()
    async with conn.transaction():
        last = await conn.fetchrow(SELECT_LAST_FINAL_EVENT)
        cursor_tx, cursor_id = (last["tx"], last["id"]) if last else (0, 0)
        row = await conn.fetchrow(
            INSERT_WEBHOOK, webhook_id, url, list(event_types), description,
            encrypt_secret(server_secret, webhook_id, secret), cursor_tx, cursor_id, now,
        )
        view = webhook_view(row)
        await audit.record(conn, actor, "webhook.create", "webhook", webhook_id, None, view)
    return view | {"secret": secret}


async def list_webhooks(conn: asyncpg.Connection, *, after: list[Any] | None, limit: int) -> list[dict[str, Any]]:
    """Subscriptions, oldest first, after the ``(created_at, id)`` key ``after``."""
    created_at, last_id = time_id_after(after)
    return [webhook_view(row) for row in await conn.fetch(SELECT_WEBHOOKS, created_at, last_id, limit)]


async def get_webhook(conn: asyncpg.Connection, webhook_id: UUID) -> dict[str, Any]:
    """One subscription; 404 when there is none."""
    row = await conn.fetchrow(SELECT_WEBHOOK, webhook_id)
    if row is None:
        raise NotFound()
    return webhook_view(row)


async def update_webhook(
    conn: asyncpg.Connection, actor: Principal, webhook_id: UUID, *, now: datetime, **changes: Any
) -> dict[str, Any]:
    """Pause or resume a subscription, or change its URL, types or description; audited when anything differs.

    A paused subscription keeps its place: resumed, it delivers what happened meanwhile, in order."""
    if "event_types" in changes:
        changes["event_types"] = list(changes["event_types"])

    async def after_change(conn: asyncpg.Connection, before: dict[str, Any], after: dict[str, Any]) -> None:
        await conn.execute(WAKE_DISPATCHERS, CHANNEL)

    return await audited_update(
        conn, actor, WEBHOOK_ROW, (webhook_id,), changes, trailing_args=(now,), after_change=after_change
    )


async def delete_webhook(conn: asyncpg.Connection, actor: Principal, webhook_id: UUID) -> None:
    """Remove a subscription and its deliveries (an HTTP call already in flight may still arrive)."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_WEBHOOK, webhook_id)
        if row is None:
            raise NotFound()
        await conn.execute(DELETE_WEBHOOK, webhook_id)
        await audit.record(conn, actor, "webhook.delete", "webhook", webhook_id, webhook_view(row), None)


async def rotate_secret(
    conn: asyncpg.Connection, actor: Principal, server_secret: str, webhook_id: UUID, *, now: datetime
) -> str:
    """A new secret for the subscription, used from its next delivery on; the old one stops at once."""
    secret = new_secret()
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_WEBHOOK, webhook_id)
        if row is None:
            raise NotFound()
        await conn.execute(UPDATE_SECRET, webhook_id, encrypt_secret(server_secret, webhook_id, secret), now)
        await audit.record(
            conn, actor, "webhook.rotate_secret", "webhook", webhook_id, None, {"secret_rotated_at": now.isoformat()}
        )
    return secret


async def list_deliveries(
    conn: asyncpg.Connection, webhook_id: UUID, *, status: str | None, after: list[Any] | None, limit: int
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first; 404 when the subscription does not exist."""
    await get_webhook(conn, webhook_id)
    created_at, last_id = time_id_after(after)
    rows = await conn.fetch(SELECT_DELIVERIES, webhook_id, status, created_at, last_id, limit)
    return [delivery_view(row) for row in rows]


async def retry_delivery(
    conn: asyncpg.Connection, actor: Principal, webhook_id: UUID, delivery_id: UUID, *, now: datetime
) -> dict[str, Any]:
    """Send a failed (or waiting) delivery again now, with a fresh 24 h of retries; 409 when already delivered.

    Until it succeeds or fails again, it holds back the subscription's later deliveries, like any pending one."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_DELIVERY, delivery_id, webhook_id)
        if row is None:
            raise NotFound()
        if row["status"] == "delivered":
            raise Conflict(message="This delivery has already been delivered.")
        before = delivery_view(row)
        after = delivery_view(await conn.fetchrow(RETRY_DELIVERY, delivery_id))
        await audit.record(conn, actor, "webhook_delivery.retry", "webhook_delivery", delivery_id, before, after)
        await conn.execute(WAKE_DISPATCHERS, CHANNEL)
    return after
