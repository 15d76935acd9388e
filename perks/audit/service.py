"""The audit log: who changed what, when, from what to what; written in the change's own transaction."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Mapping, Sequence

import asyncpg

from perks.core.auth import Principal

INSERT_ENTRY = """
INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after)
VALUES (COALESCE($1, now()), $2, $3, $4, $5, $6, $7, $8, $9)
"""


def actor_columns(actor: Principal) -> tuple[str | None, str, str]:
    """``(actor_id, actor_username, actor_role)`` as the audit log and the tier history record who acted."""
    # A client's id is a uuid like a user's; the role tells the two apart. The command line has none.
    return actor.id or None, actor.username or f"{actor.role}:{actor.id}", actor.role


def _plain(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {key: value for key, value in dict(row).items() if key != "password_hash"}


async def record(
    conn: asyncpg.Connection,
    actor: Principal,
    action: str,
    entity_type: str,
    entity_id: Any,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    at: datetime | None = None,
) -> None:
    """Write one audit entry; call it inside the transaction that makes the change."""
    await conn.execute(INSERT_ENTRY, *_entry(actor, action, entity_type, entity_id, before, after, at))


def _entry(actor: Principal, action: str, entity_type: str, entity_id: Any, before: Mapping[str, Any] | None,
           after: Mapping[str, Any] | None, at: datetime | None) -> tuple[Any, ...]:
    """An entry's values, in the order of INSERT_ENTRY's parameters."""
    return (at, *actor_columns(actor), action, entity_type, str(entity_id), _plain(before), _plain(after))


# ``{change}`` is one data-modifying statement ending in RETURNING; the entry's parameters follow its own.
INSERT_WITH_CHANGE = """
WITH change AS ({change})
INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after)
SELECT COALESCE(${a1}, now()), ${a2}, ${a3}, ${a4}, ${a5}, ${a6}, ${a7}, ${a8}, ${a9} FROM change
"""


@functools.lru_cache(maxsize=64)
def _with_change(change: str, count: int) -> str:
    return INSERT_WITH_CHANGE.format(change=change, **{f"a{i}": count + i for i in range(1, 10)})


async def record_change(
    conn: asyncpg.Connection,
    change: str,
    args: Sequence[Any],
    actor: Principal,
    action: str,
    entity_type: str,
    entity_id: Any,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    at: datetime | None = None,
) -> int:
    """Make a change and write its audit entry in one statement: atomic without a transaction, in one round trip.

    ``change`` is one INSERT, UPDATE or DELETE ending in RETURNING, with ``args`` as its parameters; the entry is
    written once for each row it returns, so a change that touched nothing leaves none. The entries written."""
    status = await conn.execute(
        _with_change(change, len(args)), *args, *_entry(actor, action, entity_type, entity_id, before, after, at)
    )
    return int(status.rsplit(" ", 1)[1])


# ``{source}`` is a constant SELECT of the caller's giving ``action, entity_type, entity_id, before, after``.
INSERT_SELECTED = """
INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after)
SELECT COALESCE($1, now()), $2, $3, $4, s.action, s.entity_type, s.entity_id, s.before, s.after FROM ({source}) s
"""


async def record_selected(
    conn: asyncpg.Connection,
    actor: Principal,
    source: str,
    *,
    at: datetime | None = None,
    timeout: float | None = None,
) -> None:
    """Write one audit entry per row of the constant query ``source`` (``action, entity_type, entity_id, before,
    after``, the JSON built by the query; no parameters), in one statement: a bulk :func:`record` for changes
    made set-based. Call it inside the change's transaction."""
    query = INSERT_SELECTED.format(source=source)
    await conn.execute(query, at, *actor_columns(actor), timeout=timeout)


SELECT_ENTRIES = """
SELECT id, at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after
FROM audit_log
WHERE ($1::text IS NULL OR entity_type = $1)
  AND ($2::text IS NULL OR entity_id = $2)
  AND ($3::text IS NULL OR actor_username = $3 OR actor_id::text = $3)
  AND ($4::timestamptz IS NULL OR at >= $4)
  AND ($5::timestamptz IS NULL OR at < $5)
  AND ($6::bigint IS NULL OR id < $6)
ORDER BY id DESC
LIMIT $7
"""


async def list_entries(
    conn: asyncpg.Connection,
    *,
    entity_type: str | None,
    entity_id: str | None,
    actor: str | None,
    at_from: datetime | None,
    at_to: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Audit entries matching the filters, newest first (``limit`` of them, after ``before_id``)."""
    rows = await conn.fetch(
        SELECT_ENTRIES, entity_type, entity_id, actor, at_from, at_to, before_id, limit
    )
    return [
        {
            "id": str(row["id"]),
            "at": row["at"],
            "actor": {
                "id": str(row["actor_id"]) if row["actor_id"] else None,
                "username": row["actor_username"],
                "role": row["actor_role"],
            },
            "action": row["action"],
            "entity_type": row["entity_type"],
            "entity_id": row["entity_id"],
            "before": row["before"],
            "after": row["after"],
        }
        for row in rows
    ]
