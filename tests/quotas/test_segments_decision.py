"""Segments on the decision side: an entitlement that requires a tag applies only to clients with that tag."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID
from zoneinfo import ZoneInfo

from perks.quotas import decision, period


async def test_an_entitlement_with_a_required_tag_applies_only_to_tagged_clients(api, db):
    prog = await api.program(yearly_quota=6)
    await db.execute("UPDATE entitlements SET required_tag = 'car_owner' WHERE perk_code = $1", prog["perk"])
    owner, owner_session = await api.member(prog["tier"])
    await db.execute("UPDATE clients SET tags = '{parent,car_owner}' WHERE id = $1", UUID(owner["id"]))
    other, other_session = await api.member(prog["tier"])
    await db.execute("UPDATE clients SET tags = '{parent}' WHERE id = $1", UUID(other["id"]))

    assert (await api.ok("GET", "/api/v1/me/entitlements", other_session))["items"] == []
    status, body = await api.call("POST", "/api/v1/me/vouchers", other_session, json={"perk": prog["perk"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")

    listed = (await api.ok("GET", "/api/v1/me/entitlements", owner_session))["items"]
    assert [(item["perk"], item["remaining"]) for item in listed] == [(prog["perk"], 6)]
    voucher = await api.voucher(owner_session, prog["perk"])
    scanned = await api.ok("POST", "/api/v1/merchant/scan", prog["cashier"], json={"token": voucher["token"]})
    assert scanned["remaining_after"] == 5

    # The tag taken away after the voucher was issued: scanning and redeeming refuse it.
    await db.execute("UPDATE clients SET tags = '{}' WHERE id = $1", UUID(owner["id"]))
    status, body = await api.call("POST", "/api/v1/merchant/scan", prog["cashier"], json={"token": voucher["token"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert (status, body["error"]["code"]) == (409, "not_entitled")
    assert await db.fetchval("SELECT count(*) FROM redemptions") == 0


async def test_the_wallet_tells_the_same_refusal_as_issuing(api, db):
    prog = await api.program(yearly_quota=6)
    await db.execute("UPDATE entitlements SET required_tag = 'parent' WHERE perk_code = $1", prog["perk"])
    client, _ = await api.member(prog["tier"])
    at = period(datetime.now(timezone.utc), ZoneInfo("Asia/Shanghai"))
    decided = await decision(db, UUID(client["id"]), prog["perk"], at)
    assert decided.refusal == "not_entitled" and not decided.entitled
    await db.execute("UPDATE clients SET tags = '{parent}' WHERE id = $1", UUID(client["id"]))
    decided = await decision(db, UUID(client["id"]), prog["perk"], at)
    assert decided.refusal is None and decided.remaining == 6
