"""The entitlement decision, read from the database's one implementation of it (``perks_decide``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from perks.quotas.counters import remaining
from perks.quotas.periods import Period


@dataclass(frozen=True)
class Entitlement:
    """One perk for a client now: what the tier grants, this period's use, its grants, and the refusal if any."""

    perk: str
    name: str
    birthday_only: bool
    # How long a voucher for the perk lives (None for an unknown perk).
    voucher_ttl_seconds: int | None
    entitled: bool
    yearly_quota: int | None
    monthly_cap: int | None
    used: int
    used_this_month: int
    # The client's own refusal (client_blocked, not_entitled, quota_exhausted, monthly_cap_reached), or None.
    refusal: str | None = None
    grants: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def remaining(self) -> int | None:
        """The tier's uses left this year (``None``: unlimited; 0 for a perk held through grants only)."""
        if not self.entitled:
            return 0
        return remaining(self.yearly_quota, self.used)

    @property
    def month_remaining(self) -> int | None:
        """The tier's uses left this month (``None``: no cap)."""
        return remaining(self.monthly_cap, self.used_this_month)

    def view(self) -> dict[str, Any]:
        """As ``/me/entitlements`` shows it."""
        return {
            "perk": self.perk,
            "name": self.name,
            "yearly_quota": self.yearly_quota if self.entitled else 0,
            "used": self.used,
            "remaining": self.remaining,
            "monthly_cap": self.monthly_cap,
            "used_this_month": self.used_this_month,
            "grants": list(self.grants),
        }


# Usable grants listed with each perk, soonest expiring first (the order redeeming draws them in).
SELECT_DECISIONS = """
SELECT d.perk, p.name, p.birthday_only, p.voucher_ttl_seconds, d.entitled, d.yearly_quota, d.monthly_cap, d.used,
       d.used_this_month, d.refusal,
       COALESCE((SELECT json_agg(json_build_object('id', g.id, 'remaining', g.quantity - g.used,
                                                   'expires_on', g.expires_on)
                                 ORDER BY g.expires_on, g.created_at, g.id)
                 FROM grants g
                 WHERE g.client_id = $1 AND g.perk_code = d.perk AND g.status = 'active'
                   AND g.expires_on >= $5 AND g.used < g.quantity), '[]') AS grants
FROM perks_decide($1, $2, $3, $4, $5) d
LEFT JOIN perks p ON p.code = d.perk
ORDER BY d.perk
"""


def _entitlement(row: asyncpg.Record) -> Entitlement:
    values = dict(row)
    values["grants"] = tuple(values["grants"])
    values["name"] = values["name"] or values["perk"]
    values["birthday_only"] = bool(values["birthday_only"])
    return Entitlement(**values)


async def entitlements(conn: asyncpg.Connection, client_id: UUID, at: Period) -> list[Entitlement]:
    """The perks the client holds now -- through its tier (tags and all) or through grants with uses left --
    with use in ``at``'s year and month."""
    rows = await conn.fetch(SELECT_DECISIONS, client_id, None, at.year, at.month, at.today)
    found = [_entitlement(row) for row in rows]
    return [item for item in found if item.entitled or item.grants]


async def decision(conn: asyncpg.Connection, client_id: UUID, perk: str, at: Period) -> Entitlement | None:
    """The decision for one perk (an unknown perk is ``not_entitled``); ``None`` when there is no such client."""
    row = await conn.fetchrow(SELECT_DECISIONS, client_id, perk, at.year, at.month, at.today)
    return _entitlement(row) if row is not None else None
