"""Audited changes of a row, as every editable record is changed: created and recorded; or locked, compared,
written and recorded with its before and after.

Each kind of row declares its statements once (:class:`AuditedRow`); :func:`audited_insert` and
:func:`audited_update` run them the same way for tiers, perks, clients, merchants, stores and webhook
subscriptions."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import NotFound
from perks.core.updates import changed_fields, constraint_errors

View = Callable[[Mapping[str, Any]], dict[str, Any]]
# Run inside the change's transaction once it is written and audited: ``(conn, before, after)``.
AfterChange = Callable[[asyncpg.Connection, dict[str, Any], dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class AuditedRow:
    """How one kind of row is changed under audit.

    ``lock`` selects the row for update from the lock arguments; ``update`` takes the key, then the value of
    every one of ``columns`` in that order (then any trailing arguments), and returns the row; ``view`` is how
    the API shows the row, which is what the audit entry's before and after hold."""

    entity_type: str
    lock: str
    update: str
    columns: tuple[str, ...]
    view: View
    constraints: Mapping[str, str] | None = None  # which field each constraint guards; None: none is named

    def constraints_named(self) -> AbstractContextManager[None]:
        """Where a refusal by a constraint is turned into the API's error naming its field (if ``constraints``)."""
        return constraint_errors(self.constraints) if self.constraints is not None else nullcontext()


async def audited_insert(
    conn: asyncpg.Connection, actor: Principal, row: AuditedRow, insert: str, *args: Any, id_column: str = "id"
) -> dict[str, Any]:
    """Create a row of this kind by ``insert`` (which returns it) and record the creation, in one transaction: the
    new row's view. A refusal by a constraint is named by field (where ``row`` names them)."""
    async with conn.transaction():
        with row.constraints_named():
            written = await conn.fetchrow(insert, *args)
        view = row.view(written)
        await audit.record(conn, actor, f"{row.entity_type}.create", row.entity_type, written[id_column], None, view)
    return view


async def audited_update(
    conn: asyncpg.Connection,
    actor: Principal,
    row: AuditedRow,
    key: Sequence[Any],
    changes: Mapping[str, Any],
    *,
    lock_args: Sequence[Any] | None = None,
    trailing_args: Sequence[Any] = (),
    after_change: AfterChange | None = None,
) -> dict[str, Any]:
    """Change the row ``key`` names (its first part is the audit log's entity id) by ``changes``, in one transaction.

    The row is locked (404 when there is none); when no change differs from what it holds it is returned as it
    is, unwritten and unaudited. Otherwise every column is written (the changes over what was there), a refusal
    by a constraint is named by field (where ``row`` names them), the audit entry records before and after, and ``after_change`` runs."""
    async with conn.transaction():
        locked = await conn.fetchrow(row.lock, *(key if lock_args is None else lock_args))
        if locked is None:
            raise NotFound()
        before = row.view(locked)
        changed = changed_fields(before, changes, frozenset(row.columns))
        if not changed:
            return before
        merged = before | changed
        with row.constraints_named():
            written = await conn.fetchrow(row.update, *key, *(merged[name] for name in row.columns), *trailing_args)
        after = row.view(written)
        await audit.record(conn, actor, f"{row.entity_type}.update", row.entity_type, key[0], before, after)
        if after_change is not None:
            await after_change(conn, before, after)
    return after
