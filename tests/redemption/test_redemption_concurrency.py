"""Under concurrent load: a voucher is redeemed once, and no quota, cap or capacity is ever exceeded.

Every test ends with the invariant check: each counter equals the number of its redemptions not voided."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def config(config):
    """A pool as large as the busiest test's concurrency, and sessions that outlast the clock's jumps."""
    return dataclasses.replace(
        config, pool_max_size=25, session_ttl_seconds=90 * 86400, client_session_ttl_seconds=90 * 86400
    )


def outcomes(results) -> Counter:
    """How many of each outcome: 201, or the refusal code."""
    return Counter(status if status == 201 else body["error"]["code"] for status, body in results)


async def test_fifty_concurrent_redemptions_of_one_voucher_redeem_it_once(api):
    prog = await api.program(yearly_quota=5)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    staff = [prog["cashier"], prog["manager"]]

    results = await asyncio.gather(*(api.redeem(staff[i % 2], voucher["token"]) for i in range(50)))

    assert outcomes(results) == {201: 1, "voucher_already_redeemed": 49}
    assert {status for status, _ in results} == {201, 409}
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 1
    used = await api.db.fetchval("SELECT used FROM client_yearly_usage")
    assert used == 1
    assert await api.counter_mismatches() == []


async def test_forty_clients_at_a_merchant_with_capacity_ten(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=10)

    async def voucher_of_new_client():
        _, session = await api.member(prog["tier"])
        return (await api.voucher(session, prog["perk"]))["token"]

    tokens = await asyncio.gather(*(voucher_of_new_client() for _ in range(40)))

    results = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in tokens))

    assert outcomes(results) == {201: 10, "merchant_capacity_exhausted": 30}
    assert sorted(body["merchant_remaining"] for status, body in results if status == 201) == list(range(10))
    usage = await api.ok("GET", "/api/v1/merchant/usage", prog["manager"])
    assert (usage["items"][0]["used"], usage["items"][0]["remaining"]) == (10, 0)
    assert await api.counter_mismatches() == []


async def _wait_for_lock_waiters(db: asyncpg.Connection, count: int) -> None:
    """Until ``count`` sessions of this database wait on a lock (the redemptions queued behind ours)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    async with asyncio.timeout(30):
        while await db.fetchval(query) < count:
            await asyncio.sleep(0.01)


async def _queued_redemptions(api, database_url, prog, client_id, session, year, attempts):
    """Redeem ``attempts`` vouchers of one client, each taken after the previous passed every check, all queued
    behind a lock on the client's yearly counter; then let them go at once. Their ``(status, body)``."""
    await api.db.execute(
        "INSERT INTO client_yearly_usage (client_id, perk_code, year, used) VALUES ($1::uuid, $2, $3, 0)"
        " ON CONFLICT DO NOTHING",
        client_id, prog["perk"], year,
    )
    holder = await asyncpg.connect(database_url)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute(
            "SELECT 1 FROM client_yearly_usage WHERE client_id = $1::uuid AND perk_code = $2 AND year = $3 FOR UPDATE",
            client_id, prog["perk"], year,
        )
        tasks = []
        for queued in range(1, attempts + 1):
            # A newer voucher supersedes this one only after it has passed its checks and queued.
            voucher = await api.voucher(session, prog["perk"])
            tasks.append(asyncio.create_task(api.redeem(prog["cashier"], voucher["token"])))
            await _wait_for_lock_waiters(api.db, queued)
        await lock.rollback()
        return await asyncio.gather(*tasks)
    finally:
        await holder.close()


async def test_monthly_cap_and_yearly_quota_hold_across_months_under_concurrency(api, clock, database_url):
    clock.set(datetime(2027, 1, 15, 12, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=3, monthly_cap=2)
    client, session = await api.member(prog["tier"])

    january = await _queued_redemptions(api, database_url, prog, client["id"], session, 2027, attempts=6)
    assert outcomes(january) == {201: 2, "monthly_cap_reached": 4}
    status, body = await api.call("POST", "/api/v1/me/vouchers", session, json={"perk": prog["perk"]})
    assert status == 409 and body["error"]["code"] == "monthly_cap_reached", body

    clock.set(datetime(2027, 2, 1, 0, 0, tzinfo=SHANGHAI))
    february = await _queued_redemptions(api, database_url, prog, client["id"], session, 2027, attempts=6)
    assert outcomes(february) == {201: 1, "quota_exhausted": 5}

    clock.set(datetime(2027, 3, 10, 9, 0, tzinfo=SHANGHAI))
    status, body = await api.call("POST", "/api/v1/me/vouchers", session, json={"perk": prog["perk"]})
    assert status == 409 and body["error"]["code"] == "quota_exhausted", body

    rows = await api.db.fetch("SELECT quota_month, count(*) FROM redemptions GROUP BY 1 ORDER BY 1")
    assert [tuple(row) for row in rows] == [(1, 2), (2, 1)]
    seen = (await api.ok("GET", "/api/v1/me/entitlements", session))["items"][0]
    assert (seen["used"], seen["remaining"]) == (3, 0)
    assert await api.counter_mismatches() == []


async def test_capacity_holds_while_voids_and_redemptions_race(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=5)
    operator = await api.staff("operator")

    async def voucher_of_new_client():
        _, session = await api.member(prog["tier"])
        return (await api.voucher(session, prog["perk"]))["token"]

    tokens = await asyncio.gather(*(voucher_of_new_client() for _ in range(12)))
    first = [await api.redeem(prog["cashier"], token) for token in tokens[:5]]
    assert [status for status, _ in first] == [201] * 5

    voids = [
        api.call("POST", f"/api/v1/redemptions/{body['id']}/void", operator, json={"reason": "test"})
        for _, body in first[:3]
    ]
    redemptions = [api.redeem(prog["cashier"], token) for token in tokens[5:]]
    results = await asyncio.gather(*voids, *redemptions)

    assert [status for status, _ in results[:3]] == [200] * 3
    redeemed = outcomes(results[3:])
    assert set(redeemed) <= {201, "merchant_capacity_exhausted"}
    assert redeemed[201] <= 3
    live = await api.db.fetchval("SELECT count(*) FROM redemptions WHERE status = 'redeemed'")
    assert live == 2 + redeemed[201] <= 5
    assert await api.db.fetchval("SELECT used FROM merchant_yearly_usage") == live
    assert await api.counter_mismatches() == []


async def test_the_counters_refuse_a_zero_limit_and_never_pass_a_limit(api, database_url):
    """The conditional moves themselves (migration 0009's functions), hit by 20 connections at once, with no check
    in front of them: the tier's yearly quota and monthly cap, and a merchant's capacity split over slots."""
    prog = await api.program(yearly_quota=3, monthly_cap=2, yearly_capacity=None)
    client, _ = await api.member(prog["tier"])
    client_id, perk, merchant_id = UUID(client["id"]), prog["perk"], UUID(prog["merchant"])
    connections = [await asyncpg.connect(database_url) for _ in range(20)]
    take_tier = "SELECT used, refusal FROM perks_take_tier($1, $2, 2027, 1, $3, $4)"
    take_capacity = "SELECT perks_take_capacity($1, $2, 2027, $3)"
    try:
        async def take(conn, quota=3, cap=2):
            async with conn.transaction():
                row = await conn.fetchrow(take_tier, client_id, perk, quota, cap)
                return row["used"] if row["refusal"] is None else row["refusal"]

        assert await take(connections[0], quota=0) == "quota_exhausted"
        assert await api.db.fetchval("SELECT count(*) FROM client_yearly_usage") == 0

        results = await asyncio.gather(*(take(conn) for conn in connections))
        assert Counter(result if isinstance(result, str) else "taken" for result in results) == {
            "taken": 2, "monthly_cap_reached": 18,
        }
        assert sorted(result for result in results if not isinstance(result, str)) == [1, 2]
        assert await api.db.fetchval("SELECT used FROM client_monthly_usage") == 2
        # The refused ones gave back the yearly use they had taken before the monthly cap refused them.
        assert await api.db.fetchval("SELECT used FROM client_yearly_usage") == 2

        async def take_slot(conn, capacity):
            async with conn.transaction():
                return await conn.fetchval(take_capacity, merchant_id, perk, capacity)

        assert await take_slot(connections[0], 0) is None
        # 40 units: 3 slots of shares 14, 13, 13.
        for _ in range(2):
            slots = await asyncio.gather(*(take_slot(conn, 40) for conn in connections))
        assert len([slot for slot in slots if slot is not None]) == 20
        assert await api.db.fetchval("SELECT used FROM merchant_yearly_usage") == 40
        assert await take_slot(connections[0], 40) is None
        assert await api.db.fetch("SELECT slot, used FROM merchant_capacity_slots WHERE used > 0 ORDER BY slot") == [
            (0, 14), (1, 13), (2, 13)]
        # 256 units: 16 slots of 16 each; 20 at once take 20, spread over the slots, none above its share.
        slots = await asyncio.gather(*(take_slot(conn, 256) for conn in connections))
        assert all(slot is not None for slot in slots) and len(set(slots)) > 1
        assert await api.db.fetchval("SELECT used FROM merchant_yearly_usage") == 60
        assert await api.db.fetchval(
            "SELECT count(*) FROM merchant_capacity_slots WHERE used > perks_slot_share(256, slot)") == 0
    finally:
        for conn in connections:
            await conn.close()
        # Counters moved without redemptions: put them back so the invariant holds for this database too.
        await api.db.execute("DELETE FROM client_yearly_usage; DELETE FROM client_monthly_usage;"
                             " DELETE FROM merchant_capacity_slots")
    assert await api.counter_mismatches() == []
