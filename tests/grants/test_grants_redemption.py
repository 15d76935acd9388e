"""Grants on the decision side: the tier first, then the soonest-expiring grant; never above a grant's quantity
under concurrency; a void gives the use back to the grant; expired and revoked grants refuse."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import date, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from perks.quotas import over_limits

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def config(config):
    return dataclasses.replace(config, pool_max_size=25, terminal_rate_limit_per_minute=100_000,
                               session_ttl_seconds=90 * 86400, client_session_ttl_seconds=90 * 86400)


async def grant(db, client_id, perk, quantity, expires_on, *, created_at=None, status="active"):
    """A grants row, as the grants API would write it (that API is another area's)."""
    created_at = created_at or datetime(2027, 1, 1, tzinfo=SHANGHAI)
    return str(await db.fetchval(
        "INSERT INTO grants (client_id, perk_code, quantity, expires_on, reason, created_at, status, revoked_at)"
        " VALUES ($1, $2, $3, $4, 'thank you', $5::timestamptz, $6::text,"
        " CASE WHEN $6::text = 'revoked' THEN $5::timestamptz END) RETURNING id",
        UUID(client_id), perk, quantity, expires_on, created_at, status,
    ))


async def redeem_new_voucher(api, prog, session):
    status, voucher = await api.call("POST", "/api/v1/me/vouchers", session, json={"perk": prog["perk"]})
    if status != 201:
        return status, voucher
    return await api.redeem(prog["cashier"], voucher["token"])


def code(result):
    status, body = result
    return status if status in (200, 201) else body["error"]["code"]


async def test_the_tier_first_then_the_soonest_expiring_grant_then_the_oldest(api, db, clock):
    clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=1)
    client, session = await api.member(prog["tier"])
    late = await grant(db, client["id"], prog["perk"], 1, date(2027, 6, 30))
    soon_newer = await grant(db, client["id"], prog["perk"], 1, date(2027, 4, 30),
                             created_at=datetime(2027, 2, 1, tzinfo=SHANGHAI))
    soon_older = await grant(db, client["id"], prog["perk"], 1, date(2027, 4, 30))

    seen = (await api.ok("GET", "/api/v1/me/entitlements", session))["items"][0]
    assert [g["id"] for g in seen["grants"]] == [soon_older, soon_newer, late]
    assert seen["grants"][0] == {"id": soon_older, "remaining": 1, "expires_on": "2027-04-30"}

    results = [await redeem_new_voucher(api, prog, session) for _ in range(5)]
    assert [code(r) for r in results] == [201, 201, 201, 201, "quota_exhausted"]
    drawn = [await db.fetchval("SELECT grant_id::text FROM redemptions WHERE id = $1", r[1]["id"])
             for r in results[:4]]
    assert drawn == [None, soon_older, soon_newer, late]
    # Grant uses count against the merchant's capacity, not the tier's counters.
    assert await db.fetchval("SELECT used FROM client_yearly_usage") == 1
    assert await db.fetchval("SELECT used FROM merchant_yearly_usage") == 4
    assert results[1][1]["client_remaining"] == 0
    events = await db.fetch("SELECT data FROM events WHERE type = 'redemption.created' ORDER BY id")
    assert [e["data"]["grant_id"] for e in events] == drawn
    seen = (await api.ok("GET", "/api/v1/me/entitlements", session))["items"][0]
    assert seen["grants"] == [] and seen["remaining"] == 0
    assert await api.counter_mismatches() == []


async def test_a_void_gives_the_use_back_to_its_grant(api, db, clock):
    clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=0)
    client, session = await api.member(prog["tier"])
    gift = await grant(db, client["id"], prog["perk"], 1, date(2027, 3, 31))
    status, redemption = await redeem_new_voucher(api, prog, session)
    assert status == 201, redemption
    assert await db.fetchval("SELECT used FROM grants") == 1

    voided = await api.ok("POST", f"/api/v1/merchant/redemptions/{redemption['id']}/void", prog["manager"],
                          json={"reason": "wrong perk"})
    assert voided["status"] == "voided"
    assert await db.fetchval("SELECT used FROM grants") == 0
    assert await db.fetchval("SELECT count(*) FROM client_yearly_usage") == 0
    event = await db.fetchval("SELECT data FROM events WHERE type = 'redemption.voided'")
    assert event["grant_id"] == gift and event["voided_by_role"] == "manager"
    assert await api.counter_mismatches() == []


async def test_expired_and_revoked_grants_refuse_with_quota_exhausted(api, db, clock):
    clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=None)
    await api.db.execute("DELETE FROM entitlements WHERE perk_code = $1", prog["perk"])
    client, session = await api.member(prog["tier"])
    status, body = await api.call("POST", "/api/v1/me/vouchers", session, json={"perk": prog["perk"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")

    await grant(db, client["id"], prog["perk"], 2, date(2027, 3, 1))  # to the end of 1 March, Shanghai
    await grant(db, client["id"], prog["perk"], 2, date(2027, 12, 31), status="revoked")
    clock.set(datetime(2027, 3, 1, 23, 59, 30, tzinfo=SHANGHAI))
    voucher = await api.voucher(session, prog["perk"])  # a perk held through a grant only
    listed = (await api.ok("GET", "/api/v1/me/entitlements", session))["items"]
    assert [(i["perk"], i["yearly_quota"], i["remaining"], len(i["grants"])) for i in listed] == [
        (prog["perk"], 0, 0, 1)]

    clock.set(datetime(2027, 3, 2, 0, 0, 1, tzinfo=SHANGHAI))  # the grant expired a second ago
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")
    status, body = await api.call("POST", "/api/v1/me/vouchers", session, json={"perk": prog["perk"]})
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")
    assert (await api.ok("GET", "/api/v1/me/entitlements", session))["items"] == []


async def test_twenty_connections_never_take_more_than_a_grants_quantity(api, db, database_url):
    """The conditional grant move itself, hit by 20 connections at once: the soonest grant's 3 uses, then the
    next grant's 2, and nothing more."""
    prog = await api.program(yearly_quota=0)
    client, _ = await api.member(prog["tier"])
    first = await grant(db, client["id"], prog["perk"], 3, date(2027, 5, 31))
    second = await grant(db, client["id"], prog["perk"], 2, date(2027, 6, 30))
    connections = [await asyncpg.connect(database_url) for _ in range(20)]
    try:
        async def take(conn):
            async with conn.transaction():
                return await conn.fetchval("SELECT perks_take_grant($1, $2, $3)::text",
                                           UUID(client["id"]), prog["perk"], date(2027, 5, 1))

        taken = await asyncio.gather(*(take(conn) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    assert Counter(taken) == {first: 3, second: 2, None: 15}
    assert await over_limits(db) == []
    await db.execute("UPDATE grants SET used = 0")  # moved without redemptions: put back for the invariant
    assert await api.counter_mismatches() == []


async def test_racing_terminals_redeem_grant_only_vouchers_once_each(api, db, clock):
    clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=0)
    tokens = []
    for _ in range(8):
        client, session = await api.member(prog["tier"])
        await grant(db, client["id"], prog["perk"], 1, date(2027, 12, 31))
        tokens.append((await api.voucher(session, prog["perk"]))["token"])
    _, second = await api.merchant_user(prog["merchant"], "cashier", prog["store"])
    staff = [prog["cashier"], second, prog["manager"]]

    results = await asyncio.gather(*(api.redeem(staff[i % 3], t) for i, t in enumerate(tokens * 3)))

    assert Counter(code(r) for r in results) == {201: 8, "voucher_already_redeemed": 16}
    assert await db.fetchval("SELECT sum(used) FROM grants") == 8
    assert await api.counter_mismatches() == []
    assert await over_limits(db) == []
