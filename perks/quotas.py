"""Quota periods and what a client may still use: the yearly quota, the monthly cap, in the bank's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg


def quota_period(instant: datetime, tz: ZoneInfo) -> tuple[int, int]:
    """``(year, month)`` of ``instant`` in the bank's time zone: the quota year and month it counts in."""
    local = instant.astimezone(tz)
    return local.year, local.month


@dataclass(frozen=True)
class Entitlement:
    """One perk as a client's tier grants it now, with this period's use."""

    perk: str
    name: str
    birthday_only: bool
    yearly_quota: int | None
    monthly_cap: int | None
    used: int
    used_this_month: int

    @property
    def remaining(self) -> int | None:
        """Uses left this year (``None``: unlimited); never below zero, even after a tier downgrade."""
        if self.yearly_quota is None:
            return None
        return max(self.yearly_quota - self.used, 0)

    @property
    def month_remaining(self) -> int | None:
        if self.monthly_cap is None:
            return None
        return max(self.monthly_cap - self.used_this_month, 0)

    def view(self) -> dict[str, Any]:
        """As ``/me/entitlements`` shows it."""
        return {
            "perk": self.perk,
            "name": self.name,
            "yearly_quota": self.yearly_quota,
            "used": self.used,
            "remaining": self.remaining,
            "monthly_cap": self.monthly_cap,
            "used_this_month": self.used_this_month,
        }


SELECT_ENTITLEMENTS = """
SELECT p.code AS perk, p.name, p.birthday_only, e.yearly_quota, e.monthly_cap,
       COALESCE(y.used, 0) AS used, COALESCE(m.used, 0) AS used_this_month
FROM clients c
JOIN entitlements e ON e.tier_code = c.tier_code
JOIN perks p ON p.code = e.perk_code
LEFT JOIN client_yearly_usage y
       ON y.client_id = c.id AND y.perk_code = p.code AND y.year = $2
LEFT JOIN client_monthly_usage m
       ON m.client_id = c.id AND m.perk_code = p.code AND m.year = $2 AND m.month = $3
WHERE c.id = $1 AND ($4::text IS NULL OR p.code = $4)
ORDER BY p.code
"""


async def entitlements(
    conn: asyncpg.Connection, client_id: UUID, year: int, month: int, perk: str | None = None
) -> list[Entitlement]:
    """The perks the client's current tier grants, with use in ``year`` and in ``month`` of that year."""
    rows = await conn.fetch(SELECT_ENTITLEMENTS, client_id, year, month, perk)
    return [Entitlement(**dict(row)) for row in rows]


async def entitlement(
    conn: asyncpg.Connection, client_id: UUID, perk: str, year: int, month: int
) -> Entitlement | None:
    """One perk's entitlement for the client's current tier, or ``None`` when the tier has none."""
    found = await entitlements(conn, client_id, year, month, perk)
    return found[0] if found else None
