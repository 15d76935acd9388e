"""The benchmark's own checks, without timing anything: the counter invariants it runs after each load run catch
a counter off its redemptions and a limit passed, and the event-loop histograms it reads are windowed right."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_tools  # noqa: E402


async def redeemed_once(api) -> dict:
    prog = await api.program(yearly_quota=2, yearly_capacity=3)
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201, body
    return prog | {"client": client["id"]}


async def test_invariants_hold_after_real_redemptions(api, database_url):
    await redeemed_once(api)
    assert await bench_tools.broken_invariants(database_url) == {}


async def test_a_counter_off_its_redemptions_is_caught(api, db, database_url):
    prog = await redeemed_once(api)
    # The merchant's counter is split into slot rows (merchant_yearly_usage is their sum): move one of them.
    await db.execute(
        "UPDATE merchant_capacity_slots SET used = used + 1 WHERE ctid = "
        "(SELECT ctid FROM merchant_capacity_slots WHERE merchant_id = $1 LIMIT 1)",
        prog["merchant"],
    )
    assert await bench_tools.broken_invariants(database_url) == {"merchant_yearly counters off their redemptions": 1}


async def test_a_limit_passed_is_caught(api, db, database_url):
    prog = await redeemed_once(api)
    # The counter still equals its redemptions, but the quota is now below them: a limit passed.
    await db.execute("UPDATE entitlements SET yearly_quota = 0 WHERE perk_code = $1", prog["perk"])
    assert await bench_tools.broken_invariants(database_url) == {"client_yearly counters over their limit": 1}


async def test_a_voucher_redeemed_twice_is_caught(api, db, database_url):
    await redeemed_once(api)
    await db.execute("ALTER TABLE redemptions DROP CONSTRAINT IF EXISTS redemptions_voucher_id_key")
    await db.execute("""
        INSERT INTO redemptions (voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by, tier_code,
                                 redeemed_at, quota_year, quota_month, unit_price_fen, status, voided_at, void_reason)
        SELECT voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by, tier_code, redeemed_at,
               quota_year, quota_month, unit_price_fen, 'voided', redeemed_at, 'test' FROM redemptions""")
    broken = await bench_tools.broken_invariants(database_url)
    assert broken.get("vouchers redeemed more than once") == 1


async def test_the_floor_redeems_each_of_its_vouchers_once_through_the_product(api, db, database_url):
    prog = await api.program(yearly_quota=3, yearly_capacity=10)
    clients = [(await api.member(prog["tier"]))[0]["id"] for _ in range(4)]
    cashier = await db.fetchval("SELECT username FROM users WHERE role = 'cashier' AND merchant_id = $1",
                                UUID(prog["merchant"]))
    count = await bench_tools.floor_setup(database_url, [cashier], [prog["perk"]], clients, 10,
                                          ZoneInfo("Asia/Shanghai"))
    assert count == 4  # one voucher per client and perk, however many were wanted
    # Each call redeems the next voucher through perks_redeem; past the last there is nothing to redeem.
    statuses = [await db.fetchval("SELECT bench_floor_redeem()") for _ in range(count + 1)]
    assert statuses == [201, 201, 201, 201, 0]
    assert await bench_tools.floor_teardown(database_url) == 4
    assert await db.fetchval("SELECT to_regclass('bench_floor')") is None
    assert await db.fetchval("SELECT count(*) FROM redemptions WHERE merchant_id = $1", UUID(prog["merchant"])) == 4
    assert await bench_tools.broken_invariants(database_url) == {}


def test_lag_window_counts_only_the_samples_between_two_scrapes():
    before = {0.001: 10.0, 0.005: 12.0, 0.01: 12.0, math.inf: 12.0}
    after = {0.001: 110.0, 0.005: 112.0, 0.01: 115.0, math.inf: 115.0}
    worst, samples, over = bench_tools.lag_window(before, after, 0.005)
    assert (worst, samples, over) == (0.01, 103, 3)


def test_lag_buckets_sum_the_workers():
    text = (
        'perks_event_loop_lag_seconds_bucket{le="0.005"} 3.0\n'
        'perks_event_loop_lag_seconds_bucket{le="+Inf"} 4.0\n'
        'perks_event_loop_lag_seconds_bucket{le="0.005"} 2.0\n'
        'perks_event_loop_lag_seconds_bucket{le="+Inf"} 2.0\n'
    )
    assert bench_tools.lag_buckets(text) == {0.005: 5.0, math.inf: 6.0}
