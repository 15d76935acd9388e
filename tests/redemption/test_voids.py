"""Voids: the quota, the cap and the capacity come back; the voucher stays spent; who may, and until when."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

SHANGHAI = ZoneInfo("Asia/Shanghai")
REASON = {"reason": "wrong client served"}


@pytest.fixture
def config(config):
    """Sessions long enough to outlast the clock's jumps past the 24-hour window."""
    return dataclasses.replace(config, session_ttl_seconds=7 * 86400, client_session_ttl_seconds=7 * 86400)


@pytest.fixture
async def redeemed(api, clock):
    """A redemption at 10:00 on 31 January 2027 (Shanghai), by a merchant with capacity 10, of a perk with
    yearly quota 3 and monthly cap 2: ``(program, client session, voucher, redemption)``."""
    clock.set(datetime(2027, 1, 31, 10, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=3, monthly_cap=2, yearly_capacity=10)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, redemption = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201, redemption
    return prog, session, voucher, redemption


def merchant_void(redemption_id):
    return f"/api/v1/merchant/redemptions/{redemption_id}/void"


def bank_void(redemption_id):
    return f"/api/v1/redemptions/{redemption_id}/void"


async def counters(api, prog, session):
    seen = (await api.ok("GET", "/api/v1/me/entitlements", session))["items"][0]
    usage = (await api.ok("GET", "/api/v1/merchant/usage", prog["manager"]))["items"][0]
    return seen["used"], seen["used_this_month"], usage["used"]


async def test_a_void_gives_everything_back_and_is_audited(api, redeemed, clock):
    prog, session, voucher, redemption = redeemed
    assert await counters(api, prog, session) == (1, 1, 1)
    clock.advance(seconds=60)

    voided = await api.ok("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON)

    assert voided["status"] == "voided"
    assert datetime.fromisoformat(voided["voided_at"]) == clock.now()
    assert voided["void_reason"] == REASON["reason"]
    assert {key: voided[key] for key in ("id", "voucher_id", "perk", "client", "merchant_id", "store_id")} == {
        key: redemption[key] for key in ("id", "voucher_id", "perk", "client", "merchant_id", "store_id")
    }
    assert datetime.fromisoformat(voided["redeemed_at"]) == datetime.fromisoformat(redemption["redeemed_at"])
    assert await counters(api, prog, session) == (0, 0, 0)
    assert await api.counter_mismatches() == []

    entries = await api.audit_entries(entity_type="redemption", entity_id=redemption["id"])
    assert [entry["action"] for entry in entries] == ["redemption.void", "redemption.create"]
    assert entries[0]["actor"]["role"] == "manager"
    assert entries[0]["before"]["status"] == "redeemed"
    assert entries[0]["after"]["status"] == "voided"

    # The voucher stays spent, even though its use came back.
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 409 and body["error"]["code"] == "voucher_already_redeemed", body
    again = await api.ok("GET", f"/api/v1/merchant/redemptions/{redemption['id']}", prog["cashier"])
    assert again["status"] == "voided"


async def test_a_void_gives_back_in_the_redemptions_own_month(api, redeemed, clock):
    prog, session, _, redemption = redeemed
    # Into February: one more use there, then the January redemption is voided.
    clock.set(datetime(2027, 2, 1, 0, 30, tzinfo=SHANGHAI))
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    assert await counters(api, prog, session) == (2, 1, 2)

    await api.ok("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON)

    assert await counters(api, prog, session) == (1, 1, 1)  # February's month untouched
    january = await api.db.fetchval("SELECT used FROM client_monthly_usage WHERE year = 2027 AND month = 1")
    assert january == 0
    assert await api.counter_mismatches() == []


async def test_a_managers_window_is_24_hours_the_banks_has_none(api, redeemed, clock):
    prog, _, _, redemption = redeemed
    redeemed_at = datetime.fromisoformat(redemption["redeemed_at"])

    clock.set(redeemed_at + timedelta(hours=24, seconds=1))
    status, body = await api.call("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON)
    assert status == 409 and body["error"]["code"] == "void_window_closed", body
    assert (await api.ok("GET", f"/api/v1/merchant/redemptions/{redemption['id']}", prog["manager"]))["status"] == "redeemed"

    clock.set(redeemed_at + timedelta(days=6))
    voided = await api.ok("POST", bank_void(redemption["id"]), await api.staff("operator"), json=REASON)
    assert voided["status"] == "voided"
    [entry, _] = await api.audit_entries(entity_type="redemption", entity_id=redemption["id"])
    assert entry["action"] == "redemption.void" and entry["actor"]["role"] == "operator"
    assert await api.counter_mismatches() == []


async def test_a_manager_may_void_at_the_last_second_of_the_window(api, redeemed, clock):
    prog, _, _, redemption = redeemed
    clock.set(datetime.fromisoformat(redemption["redeemed_at"]) + timedelta(hours=24))
    assert (await api.ok("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON))["status"] == "voided"


async def test_an_admin_voids_too(api, redeemed):
    _, _, _, redemption = redeemed
    voided = await api.ok("POST", bank_void(redemption["id"]), await api.staff("admin"), json=REASON)
    assert voided["status"] == "voided"


async def test_a_second_void_is_already_voided(api, redeemed):
    prog, session, _, redemption = redeemed
    await api.ok("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON)
    for path, token in ((merchant_void(redemption["id"]), prog["manager"]),
                        (bank_void(redemption["id"]), await api.staff("operator"))):
        status, body = await api.call("POST", path, token, json=REASON)
        assert status == 409 and body["error"]["code"] == "already_voided", body
    assert await counters(api, prog, session) == (0, 0, 0)


async def test_concurrent_voids_give_back_once(api, redeemed):
    prog, session, _, redemption = redeemed
    operator = await api.staff("operator")
    attempts = [api.call("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON) for _ in range(5)]
    attempts += [api.call("POST", bank_void(redemption["id"]), operator, json=REASON) for _ in range(5)]
    results = await asyncio.gather(*attempts)
    assert sorted(status for status, _ in results) == [200] + [409] * 9
    assert {body["error"]["code"] for status, body in results if status == 409} == {"already_voided"}
    assert await counters(api, prog, session) == (0, 0, 0)
    assert await api.counter_mismatches() == []


async def test_who_may_void(api, redeemed):
    prog, _, _, redemption = redeemed
    _, session = await api.member(prog["tier"])
    for token in (prog["cashier"], session, await api.staff("operator"), await api.staff("auditor")):
        status, body = await api.call("POST", merchant_void(redemption["id"]), token, json=REASON)
        assert status == 403 and body["error"]["code"] == "forbidden", body
    for token in (prog["manager"], prog["cashier"], session, await api.staff("auditor")):
        status, body = await api.call("POST", bank_void(redemption["id"]), token, json=REASON)
        assert status == 403 and body["error"]["code"] == "forbidden", body
    status, _ = await api.call("POST", bank_void(redemption["id"]), None, json=REASON)
    assert status == 401
    assert await api.db.fetchval("SELECT status FROM redemptions") == "redeemed"


async def test_another_merchants_redemption_or_none_is_404(api, redeemed):
    _, _, _, redemption = redeemed
    other = await api.merchant()
    _, stranger = await api.merchant_user(other["id"], "manager")
    status, body = await api.call("POST", merchant_void(redemption["id"]), stranger, json=REASON)
    assert status == 404 and body["error"]["code"] == "not_found", body
    for missing in ("00000000-0000-4000-8000-000000000000", "not-an-id"):
        for path, token in ((merchant_void(missing), stranger), (bank_void(missing), await api.staff("operator"))):
            status, body = await api.call("POST", path, token, json=REASON)
            assert status == 404 and body["error"]["code"] == "not_found", body
    assert await api.db.fetchval("SELECT status FROM redemptions") == "redeemed"


@pytest.mark.parametrize("payload", [{}, {"reason": ""}, {"reason": 5}, {"reason": "x" * 501}, {"reason": "ok", "x": 1}])
async def test_a_void_needs_a_reason(api, redeemed, payload):
    prog, _, _, redemption = redeemed
    for path, token in ((merchant_void(redemption["id"]), prog["manager"]),
                        (bank_void(redemption["id"]), await api.staff("operator"))):
        status, body = await api.call("POST", path, token, json=payload)
        assert status == 400 and body["error"]["code"] == "bad_request", body
        assert set(body["error"]["details"]["fields"]) & {"reason", "x"}


async def test_a_suspended_merchants_manager_may_not_void_but_the_bank_still_may(api, redeemed):
    prog, session, voucher, redemption = redeemed
    operator = await api.staff("operator")
    await api.ok("PATCH", f"/api/v1/merchants/{prog['merchant']}", operator, json={"status": "suspended"})
    status, body = await api.call("POST", merchant_void(redemption["id"]), prog["manager"], json=REASON)
    assert (status, body["error"]["code"]) == (403, "merchant_suspended")
    assert await api.db.fetchval("SELECT status FROM redemptions") == "redeemed"
    voided = await api.ok("POST", bank_void(redemption["id"]), operator, json=REASON)
    assert voided["status"] == "voided"
    event = await api.db.fetchval("SELECT data FROM events WHERE type = 'redemption.voided'")
    assert event["redemption_id"] == redemption["id"] and event["voided_by_role"] == "operator"
    assert await api.counter_mismatches() == []
