"""Scanning and redeeming: the response, the stores, the roles, every refusal and which one wins, quota periods."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SCAN = "/api/v1/merchant/scan"
REDEEM = "/api/v1/merchant/redemptions"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def config(config):
    """Sessions long enough to outlast the clock's jumps in these tests."""
    return dataclasses.replace(config, session_ttl_seconds=7 * 86400, client_session_ttl_seconds=7 * 86400)


@pytest.fixture
async def prog(api):
    """A perk (yearly quota 5) that a tier grants and a merchant honours, with its manager and cashier."""
    return await api.program(yearly_quota=5)


async def scan(api, token, voucher_token, **body):
    return await api.call("POST", SCAN, token, json={"token": voucher_token, **body})


async def refused_both_ways(api, staff_token, voucher_token, code, status, **body):
    """Scanning and redeeming refuse ``voucher_token`` with ``code``; nothing is consumed."""
    before = await api.db.fetchval("SELECT count(*) FROM redemptions")
    got = await scan(api, staff_token, voucher_token, **body)
    assert got[0] == status and got[1]["error"]["code"] == code, got
    got = await api.redeem(staff_token, voucher_token, **body)
    assert got[0] == status and got[1]["error"]["code"] == code, got
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == before


async def entitlement(api, client_token, perk, year=None):
    params = {"year": str(year)} if year else None
    body = await api.ok("GET", "/api/v1/me/entitlements", client_token, params=params)
    return next(item for item in body["items"] if item["perk"] == perk)


# ---- scanning --------------------------------------------------------------------------------


async def test_scan_previews_the_voucher_and_consumes_nothing(api, prog):
    client, session = await api.member(prog["tier"], name="罗小升")
    voucher = await api.voucher(session, prog["perk"])

    for _ in range(2):
        status, body = await scan(api, prog["cashier"], voucher["token"])
        assert status == 200, body
        assert body == {
            "voucher_id": voucher["id"],
            "perk": prog["perk"],
            "client": {"display_name": "罗*升", "tier": prog["tier"]},
            "remaining_after": 4,
            "expires_at": body["expires_at"],
        }
        assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat(voucher["expires_at"])
    assert (await entitlement(api, session, prog["perk"]))["used"] == 0
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 0
    assert await api.db.fetchval("SELECT count(*) FROM client_yearly_usage") == 0


async def test_scan_shows_unlimited_as_null(api):
    prog = await api.program(yearly_quota=None)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    body = await api.ok("POST", SCAN, prog["manager"], json={"token": voucher["token"]})
    assert body["remaining_after"] is None


# ---- redeeming -------------------------------------------------------------------------------


async def test_cashier_redeems_once_and_everything_counts(api, prog, clock):
    clock.set(datetime(2026, 5, 20, 10, 0, tzinfo=SHANGHAI))
    await api.agree(prog["merchant"], prog["perk"], 100, unit_price_fen=2500)
    client, session = await api.member(prog["tier"], name="Alice Smith")
    voucher = await api.voucher(session, prog["perk"])
    clock.advance(seconds=30)

    status, body = await api.redeem(prog["cashier"], voucher["token"])

    assert status == 201, body
    assert body == {
        "id": body["id"],
        "status": "redeemed",
        "voucher_id": voucher["id"],
        "perk": prog["perk"],
        "client": {"display_name": "A*********h", "tier": prog["tier"]},
        "merchant_id": prog["merchant"],
        "store_id": prog["store"],
        "redeemed_at": body["redeemed_at"],
        "client_remaining": 4,
        "merchant_remaining": 99,
    }
    assert datetime.fromisoformat(body["redeemed_at"]) == clock.now()
    seen = await entitlement(api, session, prog["perk"])
    assert (seen["used"], seen["remaining"], seen["used_this_month"]) == (1, body["client_remaining"], 1)
    usage = await api.ok("GET", "/api/v1/merchant/usage", prog["manager"])
    assert usage == {
        "year": 2026,
        "items": [{"perk": prog["perk"], "yearly_capacity": 100, "used": 1, "remaining": 99, "unit_price_fen": 2500}],
    }

    row = await api.db.fetchrow("SELECT * FROM redemptions WHERE id = $1::uuid", body["id"])
    assert (row["quota_year"], row["quota_month"], row["unit_price_fen"], row["tier_code"]) == (2026, 5, 2500, prog["tier"])
    assert str(row["client_id"]) == client["id"]
    cashier_id = await api.db.fetchval("SELECT id FROM users WHERE role = 'cashier' AND store_id = $1::uuid", prog["store"])
    assert row["redeemed_by"] == cashier_id

    [entry] = await api.audit_entries(entity_type="redemption", entity_id=body["id"])
    assert entry["action"] == "redemption.create"
    assert entry["actor"]["role"] == "cashier"
    assert entry["after"]["voucher_id"] == voucher["id"]
    assert "Alice" not in str(entry["after"])

    again = await api.redeem(prog["cashier"], voucher["token"])
    assert again[0] == 409 and again[1]["error"]["code"] == "voucher_already_redeemed"
    assert await api.counter_mismatches() == []


async def test_unlimited_quota_and_capacity_are_still_counted(api):
    prog = await api.program(yearly_quota=None, yearly_capacity=None)
    _, session = await api.member(prog["tier"])
    for used in (1, 2):
        voucher = await api.voucher(session, prog["perk"])
        status, body = await api.redeem(prog["cashier"], voucher["token"])
        assert status == 201, body
        assert (body["client_remaining"], body["merchant_remaining"]) == (None, None)
        seen = await entitlement(api, session, prog["perk"])
        assert (seen["used"], seen["remaining"]) == (used, None)
    usage = await api.ok("GET", "/api/v1/merchant/usage", prog["cashier"])
    assert usage["items"][0]["used"] == 2 and usage["items"][0]["remaining"] is None
    assert await api.counter_mismatches() == []


# ---- stores ----------------------------------------------------------------------------------


async def test_manager_redeems_at_the_merchants_only_store_by_default(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(prog["manager"], voucher["token"])
    assert status == 201, body
    assert body["store_id"] == prog["store"]


async def test_manager_of_several_stores_names_one(api, prog):
    second = await api.store(prog["merchant"])
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])

    status, body = await api.redeem(prog["manager"], voucher["token"])
    assert status == 400 and "store_id" in body["error"]["details"]["fields"], body
    status, body = await scan(api, prog["manager"], voucher["token"])
    assert status == 400 and "store_id" in body["error"]["details"]["fields"], body

    assert (await scan(api, prog["manager"], voucher["token"], store_id=second["id"]))[0] == 200
    status, body = await api.redeem(prog["manager"], voucher["token"], store_id=second["id"])
    assert status == 201, body
    assert body["store_id"] == second["id"]


async def test_a_manager_with_a_store_of_its_own_redeems_there_by_default(api, prog):
    second = await api.store(prog["merchant"])
    _, manager = await api.merchant_user(prog["merchant"], "manager", second["id"])
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(manager, voucher["token"])
    assert status == 201, body
    assert body["store_id"] == second["id"]


async def test_a_store_of_another_merchant_or_none_is_404(api, prog):
    other = await api.merchant()
    foreign = await api.store(other["id"])
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    missing = "00000000-0000-4000-8000-000000000000"
    for token in (prog["manager"], prog["cashier"]):
        for store_id in (foreign["id"], missing):
            for attempt in (scan(api, token, voucher["token"], store_id=store_id),
                            api.redeem(token, voucher["token"], store_id=store_id)):
                status, body = await attempt
                assert status == 404 and body["error"]["code"] == "not_found", body
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 0


async def test_a_cashier_naming_another_store_of_its_merchant_is_forbidden(api, prog):
    second = await api.store(prog["merchant"])
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    for attempt in (scan(api, prog["cashier"], voucher["token"], store_id=second["id"]),
                    api.redeem(prog["cashier"], voucher["token"], store_id=second["id"])):
        status, body = await attempt
        assert status == 403 and body["error"]["code"] == "forbidden", body
    status, body = await api.redeem(prog["cashier"], voucher["token"], store_id=prog["store"])
    assert status == 201, body


# ---- roles and validation --------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator", "auditor"])
async def test_bank_staff_may_not_scan_or_redeem(api, prog, role):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    token = await api.staff(role)
    for path in (SCAN, REDEEM):
        status, body = await api.call("POST", path, token, json={"token": voucher["token"]})
        assert status == 403 and body["error"]["code"] == "forbidden", body


async def test_a_client_may_not_redeem_its_own_voucher(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    for path in (SCAN, REDEEM):
        status, body = await api.call("POST", path, session, json={"token": voucher["token"]})
        assert status == 403, body
        status, body = await api.call("POST", path, None, json={"token": voucher["token"]})
        assert status == 401 and body["error"]["code"] == "unauthorized", body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "token"),
        ({"token": ""}, "token"),
        ({"token": 12}, "token"),
        ({"token": "x", "store_id": "not-a-uuid"}, "store_id"),
        ({"token": "x", "perk": "wash"}, "perk"),
    ],
)
async def test_a_malformed_body_is_400_naming_the_field(api, prog, payload, field):
    for path in (SCAN, REDEEM):
        status, body = await api.call("POST", path, prog["cashier"], json=payload)
        assert status == 400 and field in body["error"]["details"]["fields"], body


# ---- refusals, each with its status ----------------------------------------------------------


def _foreign_voucher(kid: str, jti: str = "AAAAAAAAAAAAAAAA") -> str:
    now = int(datetime.now(timezone.utc).timestamp())
    key = Ed25519PrivateKey.generate()
    return jwt.encode({"jti": jti, "iat": now, "exp": now + 300}, key, algorithm="EdDSA", headers={"kid": kid, "typ": None})


async def test_what_is_not_a_voucher_is_invalid_token(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    header, payload, signature = voucher["token"].split(".")
    kid = jwt.get_unverified_header(voucher["token"])["kid"]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    not_vouchers = [
        "not a voucher",
        prog["cashier"],  # a session token
        session,
        f"{header}.{payload}.{flipped}",  # bad signature
        _foreign_voucher(kid, jti=voucher["id"]),  # our kid, someone else's key
        _foreign_voucher("unknown1"),  # unknown key
        jwt.encode({"jti": voucher["id"], "iat": 1, "exp": 2**31}, None, algorithm="none"),
        jwt.encode({"jti": voucher["id"], "iat": 1, "exp": 2**31}, "secret" * 6, algorithm="HS256", headers={"kid": kid}),
    ]
    for token in not_vouchers:
        await refused_both_ways(api, prog["cashier"], token, "invalid_token", 400)
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201


async def test_a_suspended_merchant_is_refused(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    await api.ok("PATCH", f"/api/v1/merchants/{prog['merchant']}", await api.staff("operator"), json={"status": "suspended"})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "merchant_suspended", 403)


async def test_an_expired_voucher_is_refused_after_ten_seconds_of_leeway(api, prog, clock):
    clock.set(datetime(2026, 3, 1, 9, 0, 0, tzinfo=timezone.utc))
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    expires_at = datetime.fromisoformat(voucher["expires_at"])

    clock.set(expires_at + timedelta(seconds=11))
    await refused_both_ways(api, prog["cashier"], voucher["token"], "token_expired", 410)
    clock.set(expires_at + timedelta(seconds=10))
    assert (await scan(api, prog["cashier"], voucher["token"]))[0] == 200
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201


async def test_a_spent_voucher_stays_spent(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201
    await refused_both_ways(api, prog["cashier"], voucher["token"], "voucher_already_redeemed", 409)
    await refused_both_ways(api, prog["manager"], voucher["token"], "voucher_already_redeemed", 409)


async def test_a_superseded_voucher_is_refused(api, prog):
    _, session = await api.member(prog["tier"])
    older = await api.voucher(session, prog["perk"])
    newer = await api.voucher(session, prog["perk"])
    await refused_both_ways(api, prog["cashier"], older["token"], "voucher_superseded", 409)
    assert (await api.redeem(prog["cashier"], newer["token"]))[0] == 201


async def test_a_blocked_client_is_refused(api, prog):
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"status": "blocked"})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "client_blocked", 403)


async def test_a_perk_the_merchant_does_not_honour_is_refused(api, prog):
    other = await api.program(yearly_quota=5)
    await api.entitle(prog["tier"], other["perk"], 5)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, other["perk"])
    await refused_both_ways(api, prog["cashier"], voucher["token"], "perk_not_offered", 409)


async def test_a_tier_without_the_perk_now_is_not_entitled(api, prog):
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    plain = await api.tier()
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"tier": plain["code"]})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "not_entitled", 409)

    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    await api.ok("DELETE", f"/api/v1/tiers/{prog['tier']}/entitlements/{prog['perk']}", await api.staff("operator"), 204)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "not_entitled", 409)


async def test_a_birthday_perk_outside_the_birthday_month_is_not_entitled(api, clock):
    # Taken in the last minutes of January (Shanghai), presented in the first of February.
    clock.set(datetime(2027, 1, 31, 23, 58, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=1, perk={"birthday_only": True})
    _, session = await api.member(prog["tier"], birthday="1990-01-15")
    voucher = await api.voucher(session, prog["perk"])
    clock.set(datetime(2027, 2, 1, 0, 0, 30, tzinfo=SHANGHAI))
    await refused_both_ways(api, prog["cashier"], voucher["token"], "not_entitled", 409)


async def test_a_29_february_birthday_counts_as_february(api, clock):
    clock.set(datetime(2027, 2, 28, 23, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=1, perk={"birthday_only": True})
    _, session = await api.member(prog["tier"], birthday="2000-02-29")
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201, body


async def test_a_yearly_quota_lowered_to_its_use_is_exhausted(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    voucher = await api.voucher(session, prog["perk"])
    await api.entitle(prog["tier"], prog["perk"], 1)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "quota_exhausted", 409)


async def test_a_monthly_cap_reached_is_refused(api):
    prog = await api.program(yearly_quota=10, monthly_cap=2)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    voucher = await api.voucher(session, prog["perk"])
    await api.entitle(prog["tier"], prog["perk"], 10, 1)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "monthly_cap_reached", 409)


async def test_a_merchant_out_of_capacity_is_refused(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=1)
    for expected in (201, 409):
        _, session = await api.member(prog["tier"])
        voucher = await api.voucher(session, prog["perk"])
        if expected == 201:
            status, body = await api.redeem(prog["cashier"], voucher["token"])
            assert status == 201 and body["merchant_remaining"] == 0, body
        else:
            await refused_both_ways(api, prog["cashier"], voucher["token"], "merchant_capacity_exhausted", 409)


async def test_a_zero_quota_or_capacity_refuses_the_first_use(api):
    prog = await api.program(yearly_quota=5, yearly_capacity=0)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    await refused_both_ways(api, prog["cashier"], voucher["token"], "merchant_capacity_exhausted", 409)
    await api.entitle(prog["tier"], prog["perk"], 0)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "quota_exhausted", 409)
    assert await api.db.fetchval("SELECT count(*) FROM merchant_yearly_usage") == 0


# ---- precedence: the first row of the table that applies ---------------------------------------


async def test_an_expired_voucher_at_a_suspended_merchant_is_merchant_suspended(api, prog, clock):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    clock.set(datetime.fromisoformat(voucher["expires_at"]) + timedelta(hours=1))
    await api.ok("PATCH", f"/api/v1/merchants/{prog['merchant']}", await api.staff("operator"), json={"status": "suspended"})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "merchant_suspended", 403)
    # ...and what is not a voucher is invalid_token even there.
    await refused_both_ways(api, prog["cashier"], "garbage", "invalid_token", 400)


async def test_a_redeemed_then_expired_voucher_is_token_expired(api, prog, clock):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    clock.set(datetime.fromisoformat(voucher["expires_at"]) + timedelta(minutes=1))
    await refused_both_ways(api, prog["cashier"], voucher["token"], "token_expired", 410)


async def test_a_redeemed_then_superseded_voucher_stays_voucher_already_redeemed(api, prog):
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    await api.voucher(session, prog["perk"])
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"status": "blocked"})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "voucher_already_redeemed", 409)


async def test_a_superseded_voucher_of_a_blocked_client_is_voucher_superseded(api, prog):
    client, session = await api.member(prog["tier"])
    older = await api.voucher(session, prog["perk"])
    await api.voucher(session, prog["perk"])
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"status": "blocked"})
    await refused_both_ways(api, prog["cashier"], older["token"], "voucher_superseded", 409)


async def test_a_blocked_client_at_a_merchant_without_the_perk_is_client_blocked(api, prog):
    other = await api.program(yearly_quota=5)
    await api.entitle(prog["tier"], other["perk"], 5)
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, other["perk"])
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"status": "blocked"})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "client_blocked", 403)


async def test_a_perk_not_offered_wins_over_not_entitled(api, prog):
    other = await api.program(yearly_quota=5)
    await api.entitle(prog["tier"], other["perk"], 5)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, other["perk"])
    await api.ok("DELETE", f"/api/v1/tiers/{prog['tier']}/entitlements/{other['perk']}", await api.staff("operator"), 204)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "perk_not_offered", 409)


async def test_not_entitled_wins_over_an_exhausted_quota(api, prog):
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    voucher = await api.voucher(session, prog["perk"])
    await api.entitle(prog["tier"], prog["perk"], 1)
    plain = await api.tier()
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"tier": plain["code"]})
    await refused_both_ways(api, prog["cashier"], voucher["token"], "not_entitled", 409)


async def test_quota_wins_over_monthly_cap_which_wins_over_capacity(api):
    prog = await api.program(yearly_quota=5, monthly_cap=3, yearly_capacity=1)
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201  # the merchant's one use
    voucher = await api.voucher(session, prog["perk"])
    await refused_both_ways(api, prog["cashier"], voucher["token"], "merchant_capacity_exhausted", 409)
    await api.entitle(prog["tier"], prog["perk"], 5, 1)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "monthly_cap_reached", 409)
    await api.entitle(prog["tier"], prog["perk"], 1, 1)
    await refused_both_ways(api, prog["cashier"], voucher["token"], "quota_exhausted", 409)


# ---- quota periods in the bank's time zone ---------------------------------------------------


async def test_the_year_boundary_in_shanghai(api, clock):
    clock.set(datetime(2026, 12, 31, 23, 58, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=1)
    _, session = await api.member(prog["tier"])

    voucher = await api.voucher(session, prog["perk"])
    clock.set(datetime(2026, 12, 31, 23, 59, 59, tzinfo=SHANGHAI))
    status, last = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201 and last["client_remaining"] == 0, last

    # One second later (16:00 UTC on 31 December) it is 2027 in Shanghai: a fresh quota.
    clock.set(datetime(2027, 1, 1, 0, 0, 0, tzinfo=SHANGHAI))
    voucher = await api.voucher(session, prog["perk"])
    status, first = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201 and first["client_remaining"] == 0, first

    rows = await api.db.fetch("SELECT quota_year, quota_month FROM redemptions ORDER BY redeemed_at")
    assert [tuple(row) for row in rows] == [(2026, 12), (2027, 1)]
    assert (await entitlement(api, session, prog["perk"], 2026))["used"] == 1
    assert (await entitlement(api, session, prog["perk"], 2027))["used"] == 1
    for year in (2026, 2027):
        usage = await api.ok("GET", "/api/v1/merchant/usage", prog["manager"], params={"year": str(year)})
        assert usage["items"][0]["used"] == 1
    assert await api.counter_mismatches() == []


async def test_a_tier_upgrade_mid_year_keeps_the_use_and_grants_the_new_quota(api, prog, clock):
    clock.set(datetime(2026, 6, 1, 12, 0, tzinfo=SHANGHAI))
    client, session = await api.member(prog["tier"])
    await api.entitle(prog["tier"], prog["perk"], 2)
    for _ in range(2):
        voucher = await api.voucher(session, prog["perk"])
        assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    gold = await api.tier()
    await api.entitle(gold["code"], prog["perk"], 5)
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("operator"), json={"tier": gold["code"]})

    voucher = await api.voucher(session, prog["perk"])
    scanned = await api.ok("POST", SCAN, prog["cashier"], json={"token": voucher["token"]})
    assert scanned["remaining_after"] == 2
    assert scanned["client"]["tier"] == gold["code"]
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201 and body["client_remaining"] == 2 and body["client"]["tier"] == gold["code"], body
    assert (await entitlement(api, session, prog["perk"]))["remaining"] == 2
    tiers = await api.db.fetch("SELECT tier_code FROM redemptions ORDER BY redeemed_at, tier_code")
    assert sorted(row["tier_code"] for row in tiers) == sorted([prog["tier"], prog["tier"], gold["code"]])


# ---- metrics ---------------------------------------------------------------------------------


async def test_redemptions_are_counted_by_outcome(api, prog, client):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    await api.redeem(prog["cashier"], voucher["token"])
    await api.redeem(prog["cashier"], voucher["token"])
    await api.redeem(prog["cashier"], "garbage")
    async with client.get("/metrics") as response:
        text = await response.text()
    assert 'perks_redemptions_total{outcome="redeemed"} 1.0' in text
    assert 'perks_redemptions_total{outcome="voucher_already_redeemed"} 1.0' in text
    assert 'perks_redemptions_total{outcome="invalid_token"} 1.0' in text
    assert "perks_redemption_duration_seconds_count 3.0" in text


# ---- lists and reads -------------------------------------------------------------------------


async def redeem_new_client(api, prog, staff_token, **body):
    """A new client of the program's tier takes a voucher and ``staff_token`` redeems it; the 201 body."""
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, redemption = await api.redeem(staff_token, voucher["token"], **body)
    assert status == 201, redemption
    return redemption


async def test_a_managers_list_filters_by_store_and_time_and_pages(api, clock):
    start = datetime(2026, 5, 10, 10, 0, tzinfo=SHANGHAI)
    clock.set(start)
    prog = await api.program(yearly_quota=5)
    second = await api.store(prog["merchant"])
    made = []
    for minute in range(5):
        clock.set(start + timedelta(minutes=minute))
        store = {"store_id": second["id"]} if minute >= 3 else {"store_id": prog["store"]}
        made.append(await redeem_new_client(api, prog, prog["manager"], **store))
    newest_first = [item["id"] for item in reversed(made)]
    path = "/api/v1/merchant/redemptions"

    listed = await api.ok("GET", path, prog["manager"])
    assert [item["id"] for item in listed["items"]] == newest_first and listed["next_cursor"] is None
    item = listed["items"][-1]
    assert item == {
        "id": made[0]["id"], "status": "redeemed", "voucher_id": made[0]["voucher_id"], "perk": prog["perk"],
        "client": made[0]["client"], "merchant_id": prog["merchant"], "store_id": prog["store"],
        "redeemed_at": item["redeemed_at"], "voided_at": None, "void_reason": None,
    }
    by_store = await api.ok("GET", path, prog["manager"], params={"store_id": second["id"]})
    assert [item["id"] for item in by_store["items"]] == newest_first[:2]
    window = {"from": (start + timedelta(minutes=1)).isoformat(), "to": (start + timedelta(minutes=3)).isoformat()}
    in_window = await api.ok("GET", path, prog["manager"], params=window)
    assert [item["id"] for item in in_window["items"]] == [made[2]["id"], made[1]["id"]]

    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        got = await api.ok("GET", path, prog["manager"], params=params)
        seen += [item["id"] for item in got["items"]]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    for params, field in (({"from": "yesterday"}, "from"), ({"from": "2026-05-10T10:00:00"}, "from"),
                          ({"limit": "0"}, "limit"), ({"cursor": "!!"}, "cursor"), ({"store_id": "x"}, "store_id")):
        status, body = await api.call("GET", path, prog["manager"], params=params)
        assert status == 400 and field in body["error"]["details"]["fields"], (params, body)
    other = await api.program(yearly_quota=5)
    status, body = await api.call("GET", path, prog["manager"], params={"store_id": other["store"]})
    assert status == 404, body
    assert (await api.ok("GET", path, other["manager"]))["items"] == []
    for role in ("admin", "operator", "auditor"):
        assert (await api.call("GET", path, await api.staff(role)))[0] == 403


async def test_a_cashier_lists_its_own_stores_redemptions_of_today(api, clock):
    clock.set(datetime(2026, 5, 9, 20, 0, tzinfo=SHANGHAI))
    prog = await api.program(yearly_quota=5)
    second = await api.store(prog["merchant"])
    yesterday = await redeem_new_client(api, prog, prog["cashier"])
    clock.set(datetime(2026, 5, 10, 0, 0, 5, tzinfo=SHANGHAI))
    today = await redeem_new_client(api, prog, prog["cashier"])
    await redeem_new_client(api, prog, prog["manager"], store_id=second["id"])
    path = "/api/v1/merchant/redemptions"

    for params in ({}, {"from": "2026-05-01T00:00:00+08:00"}, {"store_id": prog["store"]}):
        listed = await api.ok("GET", path, prog["cashier"], params=params)
        assert [item["id"] for item in listed["items"]] == [today["id"]], params
    status, body = await api.call("GET", path, prog["cashier"], params={"store_id": second["id"]})
    assert status == 403, body
    everything = await api.ok("GET", path, prog["manager"])
    assert yesterday["id"] in [item["id"] for item in everything["items"]] and len(everything["items"]) == 3


async def test_a_client_lists_its_own_redemptions(api, prog):
    other = await api.program(yearly_quota=5)
    await api.entitle(prog["tier"], other["perk"], 5)
    _, session = await api.member(prog["tier"])
    first = await api.redeem(prog["cashier"], (await api.voucher(session, prog["perk"]))["token"])
    second = await api.redeem(other["cashier"], (await api.voucher(session, other["perk"]))["token"])
    await api.ok("POST", f"/api/v1/redemptions/{first[1]['id']}/void", await api.staff("operator"), json={"reason": "x"})

    listed = await api.ok("GET", "/api/v1/me/redemptions", session)
    assert [item["id"] for item in listed["items"]] == [second[1]["id"], first[1]["id"]]
    latest = listed["items"][0]
    assert set(latest) == {"id", "status", "voucher_id", "perk", "perk_name", "merchant_id", "merchant_name",
                           "store_id", "store_name", "redeemed_at", "voided_at"}
    assert (latest["merchant_id"], latest["store_id"], latest["status"]) == (other["merchant"], other["store"], "redeemed")
    assert listed["items"][1]["status"] == "voided" and listed["items"][1]["voided_at"]
    page_one = await api.ok("GET", "/api/v1/me/redemptions", session, params={"limit": "1"})
    page_two = await api.ok("GET", "/api/v1/me/redemptions", session, params={"cursor": page_one["next_cursor"]})
    assert [item["id"] for item in page_one["items"] + page_two["items"]] == [item["id"] for item in listed["items"]]

    _, stranger = await api.member(prog["tier"])
    assert (await api.ok("GET", "/api/v1/me/redemptions", stranger))["items"] == []
    for token in (prog["cashier"], await api.staff("operator")):
        assert (await api.call("GET", "/api/v1/me/redemptions", token))[0] == 403


async def test_one_redemption_is_read_by_its_merchant_and_the_bank(api, prog):
    second = await api.store(prog["merchant"])
    _, second_cashier = await api.merchant_user(prog["merchant"], "cashier", second["id"])
    other = await api.program(yearly_quota=5)
    redemption = await redeem_new_client(api, prog, prog["cashier"])
    mine = f"/api/v1/merchant/redemptions/{redemption['id']}"
    banks = f"/api/v1/redemptions/{redemption['id']}"

    for token in (prog["manager"], prog["cashier"]):
        assert (await api.ok("GET", mine, token))["id"] == redemption["id"]
    for role in ("admin", "operator", "auditor"):
        assert (await api.ok("GET", banks, await api.staff(role)))["status"] == "redeemed"
    for token in (second_cashier, other["manager"], other["cashier"]):
        status, body = await api.call("GET", mine, token)
        assert status == 404 and body["error"]["code"] == "not_found", body
    for path in ("/api/v1/merchant/redemptions/00000000-0000-4000-8000-000000000000", "/api/v1/merchant/redemptions/x"):
        assert (await api.call("GET", path, prog["manager"]))[0] == 404
    assert (await api.call("GET", banks, prog["manager"]))[0] == 403
    assert (await api.call("GET", mine, await api.staff("operator")))[0] == 403


async def test_merchant_usage_is_for_its_manager_and_cashiers(api, prog):
    await redeem_new_client(api, prog, prog["cashier"])
    for token in (prog["manager"], prog["cashier"]):
        usage = await api.ok("GET", "/api/v1/merchant/usage", token)
        assert usage["items"] == [{"perk": prog["perk"], "yearly_capacity": None, "used": 1, "remaining": None,
                                   "unit_price_fen": 1500}]
    empty = await api.ok("GET", "/api/v1/merchant/usage", prog["manager"], params={"year": "2020"})
    assert empty == {"year": 2020, "items": [{"perk": prog["perk"], "yearly_capacity": None, "used": 0,
                                               "remaining": None, "unit_price_fen": 1500}]}
    status, body = await api.call("GET", "/api/v1/merchant/usage", prog["manager"], params={"year": "soon"})
    assert status == 400 and "year" in body["error"]["details"]["fields"], body
    _, session = await api.member(prog["tier"])
    for token in (session, await api.staff("operator")):
        assert (await api.call("GET", "/api/v1/merchant/usage", token))[0] == 403
