"""Opaque ids in paths: a malformed one is simply an object that does not exist."""

from __future__ import annotations

import re
from uuid import UUID

from perks.core.errors import NotFound


def parse_id(value: str) -> UUID:
    """The UUID behind an id from a path; 404 when it cannot be one."""
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound() from None


CODE = re.compile(r"[a-z0-9_]{1,32}")


def parse_code(value: str) -> str:
    """A tier or perk code from a path; 404 when it cannot be one."""
    if not CODE.fullmatch(value):
        raise NotFound()
    return value
