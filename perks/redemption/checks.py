"""The checks a voucher passes before it is redeemed, in the contract's order: the first that applies refuses it."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from perks.core.auth import Principal
from perks.core.errors import BadRequest, Forbidden, NotFound, Refusal
from perks.privacy import mask_name

if TYPE_CHECKING:
    from perks.vouchers.keyring import KeyRing, VoucherClaims

# A terminal's clock and the QR's journey from phone to scanner may lag a little; never more than this.
EXPIRY_LEEWAY = timedelta(seconds=10)

SELECT_STORE_MERCHANT = "SELECT merchant_id FROM stores WHERE id = $1"
SELECT_FIRST_STORES = "SELECT id FROM stores WHERE merchant_id = $1 ORDER BY created_at, id LIMIT 2"


async def resolve_store(conn: asyncpg.Connection, actor: Principal, store_id: UUID | None) -> UUID:
    """The store a merchant user redeems at: a cashier's own; for a manager the one named, else its default."""
    if actor.role not in ("manager", "cashier") or not actor.merchant_id:
        raise Forbidden()
    if actor.role == "cashier":
        own = UUID(actor.store_id) if actor.store_id else None
        if store_id is None or store_id == own:
            if own is None:
                raise Forbidden()
            return own
        await _store_of_merchant(conn, actor, store_id)
        # Another store of its own merchant: the cashier knows it exists, but may not act there.
        raise Forbidden()
    if store_id is not None:
        await _store_of_merchant(conn, actor, store_id)
        return store_id
    if actor.store_id:
        return UUID(actor.store_id)
    stores = await conn.fetch(SELECT_FIRST_STORES, UUID(actor.merchant_id))
    if len(stores) != 1:
        problem = "required: the merchant has several stores" if stores else "the merchant has no store yet"
        raise BadRequest({"store_id": problem})
    return stores[0]["id"]


async def _store_of_merchant(conn: asyncpg.Connection, actor: Principal, store_id: UUID) -> None:
    merchant_id = await conn.fetchval(SELECT_STORE_MERCHANT, store_id)
    if merchant_id is None or str(merchant_id) != actor.merchant_id:
        raise NotFound()


def verify_token(keyring: KeyRing, token: str) -> VoucherClaims:
    """The claims of a voucher signed by one of our keys; ``invalid_token`` for anything else."""
    return keyring.verify(token)


# Everything the refusal table asks about, in one round trip. Counters are those of the quota period of the
# instant of redeeming; they only let a scan (and an early refusal) answer, the conditional updates decide.
SELECT_FACTS = """
SELECT v.id AS voucher_id, v.client_id, v.perk_code, v.expires_at,
       m.status AS merchant_status,
       EXISTS (SELECT 1 FROM redemptions r WHERE r.voucher_id = v.id) AS redeemed,
       EXISTS (SELECT 1 FROM vouchers n
               WHERE n.client_id = v.client_id AND n.perk_code = v.perk_code AND n.seq > v.seq) AS superseded,
       c.name AS client_name, c.status AS client_status, c.tier_code, c.birthday,
       p.birthday_only,
       a.merchant_id IS NOT NULL AS offered, a.yearly_capacity, a.unit_price_fen,
       e.tier_code IS NOT NULL AS entitled, e.yearly_quota, e.monthly_cap,
       COALESCE(cy.used, 0) AS used,
       COALESCE(cm.used, 0) AS used_this_month,
       COALESCE(mu.used, 0) AS merchant_used
FROM vouchers v
JOIN clients c ON c.id = v.client_id
JOIN perks p ON p.code = v.perk_code
JOIN merchants m ON m.id = $2
LEFT JOIN agreements a ON a.merchant_id = m.id AND a.perk_code = v.perk_code
LEFT JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = v.perk_code
LEFT JOIN client_yearly_usage cy
       ON cy.client_id = v.client_id AND cy.perk_code = v.perk_code AND cy.year = $3
LEFT JOIN client_monthly_usage cm
       ON cm.client_id = v.client_id AND cm.perk_code = v.perk_code AND cm.year = $3 AND cm.month = $4
LEFT JOIN merchant_yearly_usage mu
       ON mu.merchant_id = m.id AND mu.perk_code = v.perk_code AND mu.year = $3
WHERE v.id = $1
"""


async def facts(
    conn: asyncpg.Connection, voucher_id: str, merchant_id: UUID, year: int, month: int
) -> asyncpg.Record | None:
    """What the refusal table needs to know about a voucher at a merchant in a quota period (``None``: no voucher)."""
    return await conn.fetchrow(SELECT_FACTS, voucher_id, merchant_id, year, month)


def refuse_if_any(found: asyncpg.Record | None, claims: VoucherClaims, now: datetime, tz: ZoneInfo) -> None:
    """Raise the first refusal of the contract's table that applies, or return when none does."""
    if found is None:
        # Signed by us, yet unknown: never issued here (or issued to another database). Not a voucher.
        raise Refusal("invalid_token")
    if found["merchant_status"] != "active":
        raise Refusal("merchant_suspended")
    if now > _expiry(claims) + EXPIRY_LEEWAY:
        raise Refusal("token_expired")
    if found["redeemed"]:
        raise Refusal("voucher_already_redeemed")
    if found["superseded"]:
        raise Refusal("voucher_superseded")
    if found["client_status"] != "active":
        raise Refusal("client_blocked")
    if not found["offered"]:
        raise Refusal("perk_not_offered")
    if not found["entitled"] or (found["birthday_only"] and not in_birthday_month(found["birthday"], now, tz)):
        raise Refusal("not_entitled")
    if _reached(found["used"], found["yearly_quota"]):
        raise Refusal("quota_exhausted")
    if _reached(found["used_this_month"], found["monthly_cap"]):
        raise Refusal("monthly_cap_reached")
    if _reached(found["merchant_used"], found["yearly_capacity"]):
        raise Refusal("merchant_capacity_exhausted")


def _reached(used: int, limit: int | None) -> bool:
    return limit is not None and used >= limit


def _expiry(claims: VoucherClaims) -> datetime:
    return datetime.fromtimestamp(claims.exp, tz=timezone.utc)


def in_birthday_month(birthday: date | None, now: datetime, tz: ZoneInfo) -> bool:
    """Whether ``now``, in the bank's time zone, falls in the birthday's month (29 February counts as February)."""
    return birthday is not None and now.astimezone(tz).month == birthday.month


def client_view(name: str, tier: str | None) -> dict[str, Any]:
    """The client as a merchant may see them: a masked name and the tier."""
    return {"display_name": mask_name(name), "tier": tier}
