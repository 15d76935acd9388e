"""A client's own side: profile, entitlements, and issuing vouchers (the rules, in the contract's order)."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from jwt.utils import base64url_encode

from perks import quotas
from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.errors import NotFound, Refusal
from perks.privacy import mask_name
from perks.vouchers.keyring import JTI_PATTERN, KeyRing

VOUCHERS_PATH = "/api/v1/me/vouchers"


def new_voucher_id() -> str:
    """A voucher id (its ``jti``): 96 random bits as 16 base64url characters."""
    return base64url_encode(secrets.token_bytes(12)).decode()


def qr_urls(voucher_id: str) -> dict[str, str]:
    """Where the client's app fetches the voucher's QR images."""
    return {
        "qr_png_url": f"{VOUCHERS_PATH}/{voucher_id}/qr.png",
        "qr_svg_url": f"{VOUCHERS_PATH}/{voucher_id}/qr.svg",
    }


SELECT_PROFILE = "SELECT id, name, tier_code FROM clients WHERE id = $1"


async def client_profile(conn: asyncpg.Connection, client_id: UUID) -> dict[str, Any]:
    """``/me``: the client's id, masked name and tier."""
    row = await conn.fetchrow(SELECT_PROFILE, client_id)
    if row is None:
        raise NotFound()
    return {"id": str(row["id"]), "display_name": mask_name(row["name"]), "tier": row["tier_code"]}


async def client_entitlements(
    conn: asyncpg.Connection, client_id: UUID, year: int | None, now: datetime, tz: ZoneInfo
) -> dict[str, Any]:
    """``/me/entitlements``: what the client holds now (tier and grants), with use in ``year`` (default: the
    current quota year).

    ``used_this_month`` is use in the current quota month, which lies in the current quota year only: for any
    other year it is 0, and the monthly cap bounds nothing there."""
    client = await conn.fetchrow(SELECT_BIRTHDAY, client_id)
    if client is None:
        raise NotFound()
    today = quotas.period(now, tz)
    wanted = today.year if year is None else year
    items = []
    for entitlement in await quotas.entitlements(conn, client_id, today.of_year(wanted)):
        item = entitlement.view()
        item["birthday_only"] = entitlement.birthday_only
        item["available_from"] = (
            quotas.birthday_window(client["birthday"], today.year, today.month) if entitlement.birthday_only else None
        )
        items.append(item)
    return {"year": wanted, "items": items}


SELECT_BIRTHDAY = "SELECT birthday FROM clients WHERE id = $1"


INSERT_VOUCHER = """
INSERT INTO vouchers (id, client_id, perk_code, kid, token, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id
"""


async def issue_voucher(
    conn: asyncpg.Connection, keyring: KeyRing, client_id: UUID, perk: str, now: datetime, tz: ZoneInfo
) -> dict[str, Any]:
    """Sign a voucher for ``perk``, superseding the client's previous one for it; the 201 body of POST /me/vouchers.

    Refusals are the quota decision's (:mod:`perks.quotas`), first that applies: client_blocked, not_entitled (no
    entitlement for the tier now, an unknown perk, or a birthday perk outside the birthday month, and no grant),
    quota_exhausted, monthly_cap_reached; a grant with a use left allows a voucher beyond the tier's quota.

    Two round trips and no transaction around them: the decision only refuses early (redeeming decides again,
    under the counters' locks), and the voucher is written with its audit entry in one statement."""
    decided = await quotas.decision(conn, client_id, perk, quotas.period(now, tz))
    if decided is None:
        raise NotFound()
    if decided.refusal is not None:
        raise Refusal(decided.refusal)
    assert decided.voucher_ttl_seconds is not None  # a perk that is not in the catalogue is not_entitled

    voucher_id = new_voucher_id()
    issued = int(now.timestamp())
    expires = issued + decided.voucher_ttl_seconds
    token, kid = keyring.sign(voucher_id, issued, expires)
    issued_at = datetime.fromtimestamp(issued, timezone.utc)
    expires_at = datetime.fromtimestamp(expires, timezone.utc)
    # The newest voucher (highest seq) is the live one: inserting this one supersedes the previous.
    await audit.record_change(
        conn,
        INSERT_VOUCHER,
        (voucher_id, client_id, perk, kid, token, issued_at, expires_at),
        Principal(id=str(client_id), role="client"),
        "voucher.issue",
        "voucher",
        voucher_id,
        None,
        # Never the token: until it expires it is as good as the voucher.
        {"id": voucher_id, "client_id": str(client_id), "perk": perk, "kid": kid,
         "issued_at": issued_at, "expires_at": expires_at},
    )
    return {"id": voucher_id, "perk": perk, "token": token, "expires_at": expires_at, **qr_urls(voucher_id)}


SELECT_CLIENT_VOUCHER = """
SELECT id, perk_code AS perk, kid, token, issued_at, expires_at, seq
FROM vouchers WHERE id = $1 AND client_id = $2
"""


async def voucher_of_client(conn: asyncpg.Connection, client_id: UUID, voucher_id: str) -> dict[str, Any]:
    """One of the client's own vouchers; 404 for another client's, or none."""
    if not JTI_PATTERN.fullmatch(voucher_id):
        raise NotFound()
    row = await conn.fetchrow(SELECT_CLIENT_VOUCHER, voucher_id, client_id)
    if row is None:
        raise NotFound()
    return dict(row)
