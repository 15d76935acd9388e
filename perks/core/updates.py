"""What every audited change shares: which fields really change, and database refusals named by field."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import asyncpg

from perks.core.errors import BadRequest, Conflict


@contextmanager
def constraint_errors(fields: Mapping[str, str]) -> Iterator[None]:
    """Turn a refusal by a database constraint into the API's error naming the field it guards."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        field = fields.get(exc.constraint_name or "", "body")
        raise Conflict(details={"fields": {field: "already taken"}}) from None
    except asyncpg.CheckViolationError as exc:
        raise BadRequest({fields.get(exc.constraint_name or "", "body"): "not an allowed value"}) from None
    except asyncpg.NotNullViolationError as exc:
        column = exc.column_name or "body"
        raise BadRequest({fields.get(column, column): "must not be null"}) from None
    except asyncpg.ForeignKeyViolationError as exc:
        raise BadRequest({fields.get(exc.constraint_name or "", "body"): "does not exist"}) from None


def changed_fields(
    before: Mapping[str, Any], changes: Mapping[str, Any], allowed: frozenset[str] | None = None
) -> dict[str, Any]:
    """The ``changes`` whose value differs from ``before``; a field outside ``allowed`` is a programming error."""
    unknown = set(changes) - allowed if allowed is not None else set()
    if unknown:
        raise TypeError(f"cannot change {sorted(unknown)}")
    return {name: value for name, value in changes.items() if before[name] != value}
