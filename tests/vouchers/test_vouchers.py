"""A client's own side: /me, /me/entitlements and taking vouchers (POST /me/vouchers)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from perks.vouchers.appkeys import KEYRING
from perks.core.errors import ApiError
from perks.vouchers.service import issue_voucher

SHANGHAI = ZoneInfo("Asia/Shanghai")
ME = "/api/v1/me"
ENTITLEMENTS = "/api/v1/me/entitlements"
VOUCHERS = "/api/v1/me/vouchers"


def _segment(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def _use(db, client_id: str, perk: str, year: int, month: int, used: int, used_in_month: int | None = None) -> None:
    """Record past use as redemptions would (redeeming is another module's; here only the counters matter)."""
    await db.execute(
        """INSERT INTO client_yearly_usage (client_id, perk_code, year, used) VALUES ($1::text::uuid, $2, $3, $4)
           ON CONFLICT (client_id, perk_code, year) DO UPDATE SET used = client_yearly_usage.used + EXCLUDED.used""",
        client_id, perk, year, used,
    )
    await db.execute(
        """INSERT INTO client_monthly_usage (client_id, perk_code, year, month, used)
           VALUES ($1::text::uuid, $2, $3, $4, $5)""",
        client_id, perk, year, month, used if used_in_month is None else used_in_month,
    )


# --- /me ---------------------------------------------------------------------------------------------------------

async def test_me_shows_masked_name_and_tier(api):
    tier = await api.tier()
    client = await api.new_client(tier=tier["code"], name="罗小升")
    token = await api.client_session(client["id"])
    assert await api.ok("GET", ME, token) == {
        "id": client["id"], "display_name": "罗*升", "tier": tier["code"], "points": 0
    }


async def test_me_of_a_client_without_tier(api):
    client = await api.new_client(name="Alice Smith")
    token = await api.client_session(client["id"])
    assert await api.ok("GET", ME, token) == {
        "id": client["id"], "display_name": "A*********h", "tier": None, "points": 0
    }


@pytest.mark.parametrize("path", [ME, ENTITLEMENTS])
async def test_client_pages_are_for_clients_only(api, path):
    assert (await api.call("GET", path))[0] == 401
    for role in ("admin", "operator", "auditor"):
        status, body = await api.call("GET", path, await api.staff(role))
        assert (status, body["error"]["code"]) == (403, "forbidden"), role
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    _, cashier = await api.merchant_user(merchant["id"], "cashier", store["id"])
    assert (await api.call("GET", path, cashier))[0] == 403


# --- /me/entitlements --------------------------------------------------------------------------------------------

async def test_entitlements_show_quota_use_and_monthly_cap(api, db, clock):
    clock.set(datetime(2025, 6, 10, 12, 0, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=6, monthly_cap=2)
    await _use(db, client["id"], perk["code"], 2025, 6, used=4, used_in_month=1)
    body = await api.ok("GET", ENTITLEMENTS, token)
    assert body == {
        "year": 2025,
        "items": [
            {"perk": perk["code"], "name": perk["name"], "yearly_quota": 6, "used": 4, "remaining": 2,
             "monthly_cap": 2, "used_this_month": 1,
             "birthday_only": False, "available_from": None, "grants": []}
        ],
    }


async def test_entitlements_of_an_unlimited_perk(api, db, clock):
    clock.set(datetime(2025, 6, 10, 12, 0, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=None)
    await _use(db, client["id"], perk["code"], 2025, 6, used=40)
    [item] = (await api.ok("GET", ENTITLEMENTS, token))["items"]
    assert (item["yearly_quota"], item["used"], item["remaining"], item["monthly_cap"]) == (None, 40, None, None)


async def test_tier_change_mid_year_takes_effect_at_once(api, db, clock):
    clock.set(datetime(2025, 7, 1, 9, 0, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=10)
    await _use(db, client["id"], perk["code"], 2025, 7, used=4)
    smaller, larger = await api.tier(), await api.tier()
    await api.entitle(smaller["code"], perk["code"], 3)
    await api.entitle(larger["code"], perk["code"], 12)
    operator = await api.staff("operator")

    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"tier": larger["code"]})
    [item] = (await api.ok("GET", ENTITLEMENTS, token))["items"]
    assert (item["yearly_quota"], item["used"], item["remaining"]) == (12, 4, 8)

    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"tier": smaller["code"]})
    [item] = (await api.ok("GET", ENTITLEMENTS, token))["items"]
    assert (item["yearly_quota"], item["used"], item["remaining"]) == (3, 4, 0)
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")


async def test_quota_year_and_month_turn_in_the_bank_time_zone(api, db, clock):
    client, token, perk = await api.entitled_client(yearly_quota=10, monthly_cap=5)
    await _use(db, client["id"], perk["code"], 2024, 12, used=7, used_in_month=3)
    await _use(db, client["id"], perk["code"], 2025, 1, used=1, used_in_month=1)

    clock.set(datetime(2024, 12, 31, 23, 59, 59, tzinfo=SHANGHAI))
    body = await api.ok("GET", ENTITLEMENTS, token)
    assert body["year"] == 2024
    assert (body["items"][0]["used"], body["items"][0]["used_this_month"]) == (7, 3)

    # 16:00 UTC on 31 December is already New Year in Shanghai.
    clock.set(datetime(2025, 1, 1, 0, 0, 0, tzinfo=SHANGHAI))
    assert clock.now().astimezone(timezone.utc).year == 2024
    body = await api.ok("GET", ENTITLEMENTS, token)
    assert body["year"] == 2025
    assert (body["items"][0]["used"], body["items"][0]["remaining"], body["items"][0]["used_this_month"]) == (1, 9, 1)


async def test_entitlements_of_another_year(api, db, clock):
    clock.set(datetime(2025, 3, 5, 10, 0, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=10, monthly_cap=5)
    await _use(db, client["id"], perk["code"], 2024, 3, used=6, used_in_month=2)
    await _use(db, client["id"], perk["code"], 2025, 3, used=1)

    body = await api.ok("GET", ENTITLEMENTS, token, params={"year": "2024"})
    # "This month" lies in the current year only: another year has no use in it.
    assert body["year"] == 2024
    assert (body["items"][0]["used"], body["items"][0]["remaining"], body["items"][0]["used_this_month"]) == (6, 4, 0)
    body = await api.ok("GET", ENTITLEMENTS, token, params={"year": "2025"})
    assert (body["items"][0]["used"], body["items"][0]["used_this_month"]) == (1, 1)


@pytest.mark.parametrize("year", ["abc", "99999", "12.5"])
async def test_entitlements_refuse_a_bad_year(api, year):
    client = await api.new_client()
    token = await api.client_session(client["id"])
    status, body = await api.call("GET", ENTITLEMENTS, token, params={"year": year})
    assert status == 400
    assert "year" in body["error"]["details"]["fields"]


async def test_entitlements_of_a_client_without_tier_are_empty(api, clock):
    clock.set(datetime(2025, 3, 5, 10, 0, tzinfo=SHANGHAI))
    client = await api.new_client()
    token = await api.client_session(client["id"])
    assert await api.ok("GET", ENTITLEMENTS, token) == {"year": 2025, "items": []}


# --- POST /me/vouchers -------------------------------------------------------------------------------------------

async def test_issue_voucher(api, client, db, clock):
    clock.set(datetime(2025, 5, 20, 8, 30, 15, tzinfo=SHANGHAI))
    holder, token, perk = await api.entitled_client(perk={"voucher_ttl_seconds": 600})
    async with client.post(VOUCHERS, json={"perk": perk["code"]}, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 201
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert set(body) == {"id", "perk", "token", "expires_at", "qr_png_url", "qr_svg_url"}
    assert body["perk"] == perk["code"]
    assert datetime.fromisoformat(body["expires_at"]) == clock.now() + timedelta(seconds=600)
    assert body["qr_png_url"] == f"{VOUCHERS}/{body['id']}/qr.png"
    assert body["qr_svg_url"] == f"{VOUCHERS}/{body['id']}/qr.svg"

    claims = client.app[KEYRING].verify(body["token"])
    assert (claims.jti, claims.exp - claims.iat, claims.iat) == (body["id"], 600, int(clock.now().timestamp()))
    row = await db.fetchrow("SELECT client_id::text, perk_code, kid, token, expires_at FROM vouchers WHERE id = $1", body["id"])
    assert dict(row) == {"client_id": holder["id"], "perk_code": perk["code"], "kid": claims.kid,
                         "token": body["token"], "expires_at": clock.now() + timedelta(seconds=600)}

    [entry] = await api.audit_entries(entity_type="voucher", entity_id=body["id"])
    assert entry["action"] == "voucher.issue"
    assert entry["actor"]["role"] == "client"
    assert entry["after"]["perk"] == perk["code"]
    assert body["token"] not in json.dumps(entry)


async def test_voucher_token_is_short_with_exactly_the_contract_header_and_claims(api):
    _, token, perk = await api.entitled_client()
    voucher = await api.voucher(token, perk["code"])
    jws = voucher["token"]
    assert len(jws) <= 213
    header, claims = _segment(jws, 0), _segment(jws, 1)
    assert set(header) == {"alg", "kid"} and header["alg"] == "EdDSA" and len(header["kid"]) == 8
    assert set(claims) == {"jti", "iat", "exp"}
    assert claims["jti"] == voucher["id"] and len(voucher["id"]) == 16
    assert claims["exp"] - claims["iat"] == 300


async def test_issuing_counts_in_metrics(api, client):
    _, token, perk = await api.entitled_client()
    await api.voucher(token, perk["code"])
    await api.voucher(token, perk["code"])
    async with client.get("/metrics") as response:
        text = await response.text()
    assert f'perks_vouchers_issued_total{{perk="{perk["code"]}"}} 2.0' in text


async def test_a_new_voucher_supersedes_the_previous_one(api, client, db):
    holder, token, perk = await api.entitled_client()
    first = await api.voucher(token, perk["code"])
    second = await api.voucher(token, perk["code"])
    assert first["id"] != second["id"] and first["token"] != second["token"]
    live = await db.fetchval(
        "SELECT id FROM vouchers WHERE client_id = $1::text::uuid AND perk_code = $2 ORDER BY seq DESC LIMIT 1",
        holder["id"], perk["code"],
    )
    assert live == second["id"]
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE client_id = $1::text::uuid", holder["id"]) == 2
    # Both stay genuine vouchers; refusing the superseded one is the redeemer's rule.
    assert client.app[KEYRING].verify(first["token"]).jti == first["id"]


async def _blocked_issue(client, db, config, holder: dict, perk: str) -> ApiError:
    """The refusal of the issuing rule itself for a blocked client (a block landing between a request's session
    check and its issue): through the API, v1.1 ends a blocked client's sessions at once (401)."""
    with pytest.raises(ApiError) as refused:
        now = datetime.now(timezone.utc)
        await issue_voucher(db, client.app[KEYRING], UUID(holder["id"]), perk, now, config.timezone)
    return refused.value


async def test_a_blocked_client_is_refused_first(api, client, db, config):
    holder, token, _ = await api.entitled_client()
    await api.ok("PATCH", f"/api/v1/clients/{holder['id']}", await api.staff("operator"), json={"status": "blocked"})
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": "no_such_perk"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    # Blocked comes before not entitled (an unknown perk), per the contract's order.
    refused = await _blocked_issue(client, db, config, holder, "no_such_perk")
    assert (refused.status, refused.code) == (403, "client_blocked")


async def test_a_blocked_client_cannot_take_an_entitled_perk(api, client, db, config):
    holder, token, perk = await api.entitled_client()
    await api.ok("PATCH", f"/api/v1/clients/{holder['id']}", await api.staff("operator"), json={"status": "blocked"})
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    refused = await _blocked_issue(client, db, config, holder, perk["code"])
    assert (refused.status, refused.code) == (403, "client_blocked")


async def test_not_entitled(api):
    _, token, _ = await api.entitled_client()
    other_perk = await api.perk()
    for perk in (other_perk["code"], "no_such_perk"):
        status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk})
        assert (status, body["error"]["code"]) == (409, "not_entitled"), perk
    no_tier = await api.new_client()
    status, body = await api.call("POST", VOUCHERS, await api.client_session(no_tier["id"]), json={"perk": other_perk["code"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")


async def test_quota_exhausted_comes_before_the_monthly_cap(api, db, clock):
    clock.set(datetime(2025, 4, 2, 10, 0, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=2, monthly_cap=1)
    await _use(db, client["id"], perk["code"], 2025, 4, used=2)
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")


async def test_a_zero_quota_is_exhausted(api):
    _, token, perk = await api.entitled_client(yearly_quota=0)
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")


async def test_monthly_cap_reached_then_next_month_allowed(api, db, clock):
    clock.set(datetime(2025, 4, 30, 23, 30, tzinfo=SHANGHAI))
    client, token, perk = await api.entitled_client(yearly_quota=5, monthly_cap=1)
    await _use(db, client["id"], perk["code"], 2025, 4, used=1)
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "monthly_cap_reached")
    clock.set(datetime(2025, 5, 1, 0, 0, tzinfo=SHANGHAI))
    await api.voucher(token, perk["code"])


async def test_birthday_perk_only_in_the_birthday_month_in_the_bank_time_zone(api, clock):
    _, token, perk = await api.entitled_client(perk={"birthday_only": True}, birthday="1990-03-15")
    clock.set(datetime(2025, 2, 28, 23, 30, tzinfo=SHANGHAI))
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")
    # Still February in UTC, already March in Shanghai.
    clock.set(datetime(2025, 3, 1, 0, 30, tzinfo=SHANGHAI))
    assert clock.now().astimezone(timezone.utc).month == 2
    await api.voucher(token, perk["code"])
    clock.set(datetime(2025, 4, 1, 0, 30, tzinfo=SHANGHAI))
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")


async def test_a_29_february_birthday_counts_as_february_in_any_year(api, clock):
    _, token, perk = await api.entitled_client(perk={"birthday_only": True}, birthday="2000-02-29")
    clock.set(datetime(2025, 2, 10, 12, 0, tzinfo=SHANGHAI))  # 2025 has no 29 February
    await api.voucher(token, perk["code"])
    clock.set(datetime(2025, 3, 1, 0, 0, tzinfo=SHANGHAI))
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")


async def test_birthday_perk_needs_a_birthday(api, clock):
    _, token, perk = await api.entitled_client(perk={"birthday_only": True})
    status, body = await api.call("POST", VOUCHERS, token, json={"perk": perk["code"]})
    assert (status, body["error"]["code"]) == (409, "not_entitled")


@pytest.mark.parametrize(
    "payload, field",
    [({}, "perk"), ({"perk": "Not A Code"}, "perk"), ({"perk": 7}, "perk"), ({"perk": "x", "more": 1}, "more")],
)
async def test_issue_voucher_validates_the_body(api, payload, field):
    client = await api.new_client()
    token = await api.client_session(client["id"])
    status, body = await api.call("POST", VOUCHERS, token, json=payload)
    assert status == 400
    assert field in body["error"]["details"]["fields"]


async def test_only_a_client_takes_vouchers(api):
    perk = await api.perk()
    assert (await api.call("POST", VOUCHERS, json={"perk": perk["code"]}))[0] == 401
    for role in ("admin", "operator", "auditor"):
        status, body = await api.call("POST", VOUCHERS, await api.staff(role), json={"perk": perk["code"]})
        assert (status, body["error"]["code"]) == (403, "forbidden"), role


async def test_entitlements_say_when_a_birthday_perk_is_available_next(api, clock):
    from datetime import datetime, timezone

    clock.set(datetime(2026, 5, 10, 4, 0, tzinfo=timezone.utc))
    tier = await api.tier()
    gift = await api.perk(birthday_only=True)
    wash = await api.perk()
    for perk in (gift, wash):
        await api.entitle(tier["code"], perk["code"], 1)
    by_month = {}
    for label, birthday in (("past", "1990-03-15"), ("now", "1988-05-31"), ("ahead", "2000-02-29"), ("later", "1975-11-02")):
        client = await api.new_client(tier=tier["code"], birthday=birthday)
        body = await api.ok("GET", "/api/v1/me/entitlements", await api.client_session(client["id"]))
        items = {item["perk"]: item for item in body["items"]}
        assert items[wash["code"]]["birthday_only"] is False
        assert items[wash["code"]]["available_from"] is None
        assert items[gift["code"]]["birthday_only"] is True
        by_month[label] = items[gift["code"]]["available_from"]
    assert by_month == {"past": "2027-03-01", "now": "2026-05-01", "ahead": "2027-02-01", "later": "2026-11-01"}


async def test_vouchers_taken_at_once_each_get_their_entry_and_only_the_newest_redeems(api):
    program = await api.program(yearly_quota=5)
    _, client_token = await api.member(program["tier"])
    answers = await asyncio.gather(*(api.call("POST", VOUCHERS, client_token, json={"perk": program["perk"]})
                                     for _ in range(12)))
    assert [status for status, _ in answers] == [201] * 12
    vouchers = [body for _, body in answers]
    assert len({voucher["id"] for voucher in vouchers}) == 12
    for voucher in vouchers:
        assert len(await api.audit_entries(entity_type="voucher", entity_id=voucher["id"])) == 1

    redeemed = await asyncio.gather(*(api.redeem(program["cashier"], voucher["token"]) for voucher in vouchers))
    statuses = sorted((status, body.get("error", {}).get("code")) for status, body in redeemed)
    assert statuses == [(201, None)] + [(409, "voucher_superseded")] * 11
    assert await api.counter_mismatches() == []
