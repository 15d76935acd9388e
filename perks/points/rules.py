"""Points rules: how many points a source of contribution (deposit, wealth, insurance, ...) earns per yuan."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any, Mapping

import asyncpg

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import BadRequest
from perks.core.updates import constraint_errors

MAX_POINTS_PER_YUAN = Decimal(10_000)
RULE_CONSTRAINTS = {"code_check": "source", "points_rules_points_per_yuan_check": "points_per_yuan"}

SELECT_RULES = """
SELECT source, points_per_yuan, created_at, updated_at FROM points_rules
WHERE ($1::text IS NULL OR source > $1) ORDER BY source LIMIT $2
"""
LOCK_RULE = """
SELECT source, points_per_yuan, created_at, updated_at FROM points_rules WHERE source = $1::text FOR NO KEY UPDATE
"""
INSERT_RULE = """
INSERT INTO points_rules (source, points_per_yuan) VALUES ($1, $2) ON CONFLICT (source) DO NOTHING
RETURNING source, points_per_yuan, created_at, updated_at
"""
UPDATE_RULE = """
UPDATE points_rules SET points_per_yuan = $2, updated_at = now() WHERE source = $1::text
RETURNING source, points_per_yuan, created_at, updated_at
"""


def points_for(amount_fen: int, points_per_yuan: Decimal) -> int:
    """Points earned by ``amount_fen`` under a rule: whole points, rounded down (as the database computes them)."""
    return int((Decimal(amount_fen) * points_per_yuan / 100).to_integral_value(rounding=ROUND_FLOOR))


def rule_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as the API shows it; the rate is a decimal string, exact (``"1.5"``)."""
    return {
        "source": row["source"],
        "points_per_yuan": _plain_decimal(row["points_per_yuan"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _plain_decimal(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


async def list_rules(conn: asyncpg.Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Rules in order of their source codes, after ``after``."""
    return [rule_view(row) for row in await conn.fetch(SELECT_RULES, after, limit)]


async def put_rule(conn: asyncpg.Connection, actor: Principal, source: str, points_per_yuan: Decimal) -> dict[str, Any]:
    """Create or change the rule of ``source``; audited when anything differs. Events already ingested keep the
    points they were given."""
    if not points_per_yuan.is_finite() or points_per_yuan.as_tuple().exponent < -4:  # type: ignore[operator]
        raise BadRequest({"points_per_yuan": "must be a number with at most 4 decimal places"})
    async with conn.transaction():
        with constraint_errors(RULE_CONSTRAINTS):
            created = await conn.fetchrow(INSERT_RULE, source, points_per_yuan)
        if created is not None:
            view = rule_view(created)
            await audit.record(conn, actor, "points_rule.create", "points_rule", source, None, view)
            return view
        row = await conn.fetchrow(LOCK_RULE, source)
        before = rule_view(row)
        if row["points_per_yuan"] == points_per_yuan:
            return before
        with constraint_errors(RULE_CONSTRAINTS):
            row = await conn.fetchrow(UPDATE_RULE, source, points_per_yuan)
        after = rule_view(row)
        await audit.record(conn, actor, "points_rule.update", "points_rule", source, before, after)
    return after
