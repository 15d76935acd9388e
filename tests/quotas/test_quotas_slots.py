"""A hot partner's capacity split over slot rows: never above the capacity under concurrency, voids give a unit
back, each quota year has its own slots, and a changed capacity re-spreads the use."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from perks.quotas import over_limits

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def config(config):
    """A pool as large as the tests' concurrency, and no rate limit a test's burst could meet."""
    return dataclasses.replace(config, pool_max_size=25, terminal_rate_limit_per_minute=100_000)


def outcomes(results) -> Counter:
    return Counter(status if status == 201 else body["error"]["code"] for status, body in results)


async def vouchers(api, prog, count):
    async def one():
        _, session = await api.member(prog["tier"])
        return (await api.voucher(session, prog["perk"]))["token"]

    return await asyncio.gather(*(one() for _ in range(count)))


async def slots(api):
    return [tuple(row) for row in await api.db.fetch(
        "SELECT year, slot, used FROM merchant_capacity_slots WHERE used > 0 ORDER BY year, slot")]


async def invariant_holds(api):
    assert await api.counter_mismatches() == []
    assert await over_limits(api.db) == []


async def test_sixty_terminals_at_a_split_capacity_of_forty_eight_redeem_exactly_forty_eight(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=48)  # 3 slots of 16
    tokens = await vouchers(api, prog, 60)
    _, second_cashier = await api.merchant_user(prog["merchant"], "cashier", prog["store"])
    staff = [prog["cashier"], second_cashier, prog["manager"]]

    results = await asyncio.gather(*(api.redeem(staff[i % 3], token) for i, token in enumerate(tokens)))

    assert outcomes(results) == {201: 48, "merchant_capacity_exhausted": 12}
    assert [used for _, _, used in await slots(api)] == [16, 16, 16]
    remaining = [body["merchant_remaining"] for status, body in results if status == 201]
    # Each answer is the capacity left as that redemption saw it: concurrent ones on other slots may agree.
    assert all(0 <= left <= 47 for left in remaining)
    usage = await api.ok("GET", "/api/v1/merchant/usage", prog["manager"])
    assert (usage["items"][0]["used"], usage["items"][0]["remaining"]) == (48, 0)
    await invariant_holds(api)


async def test_voids_give_a_slot_back_while_redemptions_race_for_it(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=32)  # 2 slots of 16
    operator = await api.staff("operator")
    tokens = await vouchers(api, prog, 44)
    first = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in tokens[:32]))
    assert outcomes(first) == {201: 32}

    voids = [api.call("POST", f"/api/v1/redemptions/{body['id']}/void", operator, json={"reason": "test"})
             for _, body in first[:6]]
    redeems = [api.redeem(prog["cashier"], token) for token in tokens[32:]]
    results = await asyncio.gather(*voids, *redeems)

    assert [status for status, _ in results[:6]] == [200] * 6
    redeemed = outcomes(results[6:])
    assert set(redeemed) <= {201, "merchant_capacity_exhausted"} and redeemed[201] <= 6
    live = await api.db.fetchval("SELECT count(*) FROM redemptions WHERE status = 'redeemed'")
    assert live == 26 + redeemed[201] <= 32
    assert sum(used for _, _, used in await slots(api)) == live
    await invariant_holds(api)


async def test_each_quota_year_has_its_own_slots_and_a_void_returns_to_its_own_year(api, clock):
    clock.set(datetime(2026, 12, 31, 23, 59, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=5, yearly_capacity=2)
    old_year = await vouchers(api, prog, 3)
    late = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in old_year))
    assert outcomes(late) == {201: 2, "merchant_capacity_exhausted": 1}

    clock.set(datetime(2027, 1, 1, 0, 0, tzinfo=SHANGHAI))
    new_year = await vouchers(api, prog, 3)
    early = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in new_year))
    assert outcomes(early) == {201: 2, "merchant_capacity_exhausted": 1}
    assert await slots(api) == [(2026, 0, 2), (2027, 0, 2)]

    operator = await api.staff("operator")
    voided = next(body for status, body in late if status == 201)
    await api.ok("POST", f"/api/v1/redemptions/{voided['id']}/void", operator, json={"reason": "late"})
    assert await slots(api) == [(2026, 0, 1), (2027, 0, 2)]
    usage = await api.ok("GET", "/api/v1/merchant/usage?year=2026", prog["manager"])
    assert usage["items"][0]["used"] == 1
    await invariant_holds(api)


async def test_a_lowered_capacity_re_spreads_the_use_so_no_slot_lets_the_total_pass_it(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=64)  # 4 slots of 16
    tokens = await vouchers(api, prog, 30)
    results = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in tokens[:20]))
    assert outcomes(results) == {201: 20}

    await api.agree(prog["merchant"], prog["perk"], 24)  # 2 slots of 12: 20 used, 4 left
    assert sum(used for _, _, used in await slots(api)) == 20
    assert await api.db.fetchval(
        "SELECT count(*) FROM merchant_capacity_slots WHERE used > perks_slot_share(24, slot)") == 0
    more = await asyncio.gather(*(api.redeem(prog["cashier"], token) for token in tokens[20:]))
    assert outcomes(more) == {201: 4, "merchant_capacity_exhausted": 6}

    await api.agree(prog["merchant"], prog["perk"], 10)  # below what is used: every slot full
    assert await api.db.fetchval("SELECT used FROM merchant_yearly_usage") == 24
    _, session = await api.member(prog["tier"])
    token = (await api.voucher(session, prog["perk"]))["token"]
    status, body = await api.redeem(prog["cashier"], token)
    assert status == 409 and body["error"]["code"] == "merchant_capacity_exhausted"
    assert await api.counter_mismatches() == []


async def test_a_total_written_through_the_usage_view_is_spread_over_the_slots(api, db):
    prog = await api.program(yearly_quota=5, yearly_capacity=40)
    await db.execute("INSERT INTO merchant_yearly_usage (merchant_id, perk_code, year, used) VALUES ($1, $2, 2030, 30)",
                     prog["merchant"], prog["perk"])
    assert await slots(api) == [(2030, 0, 14), (2030, 1, 13), (2030, 2, 3)]
    assert await db.fetchval("SELECT used FROM merchant_yearly_usage WHERE year = 2030") == 30
