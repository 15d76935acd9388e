"""The outbox: writing an event inside its change's transaction, and reading the final ones in order.

Order. Ids are assigned before commit, so a lower id may commit after a higher one: a reader that moved past the
higher one by id would never see the lower. Every event whose writing transaction (``tx``) is older than the oldest
transaction still running (in this database) is final, and nothing can join that set behind it. Readers therefore see only those
events, in ``(tx, id)`` order; within a transaction that is id order, and an event caused by another (written by a
transaction that began after the first committed) always comes after it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Sequence

import asyncpg

from perks.core.errors import BadRequest

EVENT_TYPES = (
    "redemption.created",
    "redemption.voided",
    "client.tier_changed",
    "statement.finalized",
    "grant.created",
    "merchant.suspended",
)
# Every worker's dispatcher LISTENs here; record_event NOTIFYs in the event's transaction (delivered at commit).
CHANNEL = "perks_events"

INSERT_EVENT = "INSERT INTO events (type, occurred_at, data) VALUES ($1, $2, $3::jsonb) RETURNING id"
NOTIFY_EVENT = "SELECT pg_notify($1, $2)"
# The oldest transaction that may still commit an event here: the oldest running at this statement's snapshot,
# leaving out those known to run in another database of the server (they cannot write to this one; one that has
# ended meanwhile stays in, to be safe). Every event whose `tx` is below it is final.
HORIZON = """horizon AS (
    SELECT LEAST(pg_snapshot_xmax(snap), (
               SELECT min(x) FROM pg_snapshot_xip(snap) AS x
               WHERE xid(x) NOT IN (SELECT backend_xid FROM pg_stat_activity
                                    WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL)
           )) AS xmin
    FROM (SELECT pg_current_snapshot() AS snap) AS now_running
)"""
# $1: the event to read after (0: from the start), $2: types (NULL: all), $3: limit.
SELECT_EVENTS = """
WITH """ + HORIZON + """,
     start AS (SELECT COALESCE((SELECT tx FROM events WHERE id = $1), '0'::xid8) AS tx)
SELECT e.id, e.type, e.occurred_at, e.data, e.tx
FROM events e, horizon, start
WHERE e.tx < horizon.xmin
  AND (e.tx, e.id) > (start.tx, $1::bigint)
  AND ($2::text[] IS NULL OR e.type = ANY($2::text[]))
ORDER BY e.tx, e.id
LIMIT $3
"""
EVENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)"


async def record_event(
    conn: asyncpg.Connection, type: str, occurred_at: datetime, data: Mapping[str, Any]
) -> int:
    """Write one event in the caller's transaction (call it inside the change's ``conn.transaction()``)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event_id = await conn.fetchval(INSERT_EVENT, type, occurred_at, dict(data))
    await conn.execute(NOTIFY_EVENT, CHANNEL, "")
    return event_id


def parse_types(raw: str | None) -> list[str] | None:
    """The event types of a ``types=a,b`` filter; 400 naming ``types`` for an unknown one."""
    if raw is None:
        return None
    types = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown or not types:
        raise BadRequest({"types": f"unknown event type: {', '.join(unknown) or '(none given)'}; "
                                   f"known: {', '.join(EVENT_TYPES)}"})
    return list(dict.fromkeys(types))


def event_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the API and webhooks show it: ``{id, type, occurred_at, data}``."""
    data = row["data"]
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "occurred_at": row["occurred_at"],
        "data": json.loads(data) if isinstance(data, str) else data,
    }


async def list_events(
    conn: asyncpg.Connection, *, after: int = 0, types: Sequence[str] | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Final events after the event ``after`` (0: from the start), in outbox order; 400 for an unknown ``after``."""
    if after and not await conn.fetchval(EVENT_EXISTS, after):
        raise BadRequest({"after": "no event with this id"})
    rows = await conn.fetch(SELECT_EVENTS, after, list(types) if types is not None else None, limit)
    return [event_view(row) for row in rows]
