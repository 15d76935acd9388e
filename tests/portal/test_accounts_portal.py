"""The portal and the wallet tried as an attacker would: stored XSS in every name field, forged forms, and
one-time wallet links opened ten times at once or too late."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from yarl import URL

from tests.support import PASSWORD, unique
from tests.portal.test_portal_pages import IDEMPOTENCY, _on_test_server, logged_in, visitors  # noqa: F401

SCRIPT = "<script>alert('x')</script>"
IMAGE = '<img src=x onerror="alert(1)">'


def _payload(label: str) -> str:
    return f"{label}{SCRIPT}{IMAGE}"


def _safe(text: str) -> None:
    """No payload survives as markup; the page shows it as text."""
    assert "<script>alert" not in text and "<img src=x" not in text and "onerror=\"alert" not in text


def _shown(text: str, label: str) -> None:
    _safe(text)
    assert f"{label}&lt;script&gt;alert(" in text, label


async def _hostile_program(api) -> dict[str, Any]:
    """Every name a merchant, the bank or a client can choose, set to markup."""
    tier = await api.tier(name=_payload("T"))
    perk = await api.perk(name=_payload("P"))
    await api.entitle(tier["code"], perk["code"], 5)
    merchant = await api.merchant(name=_payload("M"))
    store = await api.store(merchant["id"], name=_payload("S1"))
    await api.store(merchant["id"], name=_payload("S2"))
    await api.agree(merchant["id"], perk["code"], 10)
    manager, _ = await api.merchant_user(merchant["id"], "manager")
    client, client_token = await api.member(tier["code"], name=_payload("C") + "Z")
    return {
        "merchant": merchant["id"], "store": store["id"], "perk": perk["code"], "manager": manager["username"],
        "client": client, "client_token": client_token,
    }


async def test_stored_markup_in_every_name_is_escaped_on_every_page(visitors, api):
    world = await _hostile_program(api)
    manager = await logged_in(visitors, world["manager"])
    status, text, _ = await manager.get("/portal/scan")
    assert status == 200
    _shown(text, "S1")
    _shown(text, "S2")
    voucher = await api.voucher(world["client_token"], world["perk"])
    status, text, _ = await manager.post("/portal/scan", {"token": voucher["token"], "store_id": world["store"]})
    assert status == 200
    _shown(text, "P")
    _shown(text, "T")
    _safe(text)  # the client's masked name keeps its first character, "C", and its last, "Z"
    key = IDEMPOTENCY.search(text).group(1)
    form = {"token": voucher["token"], "idempotency_key": key, "store_id": world["store"]}
    status, text, _ = await manager.post("/portal/redeem", form)
    assert status == 200 and 'data-outcome="redeemed"' in text
    _shown(text, "P")
    status, text, _ = await manager.get("/portal/today")
    _shown(text, "P")
    _shown(text, "S1")
    redemption_id = await api.db.fetchval("SELECT id::text FROM redemptions WHERE voucher_id = $1", voucher["id"])
    reason = _payload("R")
    status, _, _ = await manager.post(f"/portal/redemptions/{redemption_id}/void", {"reason": reason})
    assert status == 303
    status, text, _ = await manager.get(f"/portal/today?voided={redemption_id}")
    _shown(text, "R")
    status, text, _ = await manager.get("/portal/overview")
    assert status == 200
    _shown(text, "P")

    link = await api.ok("POST", f"/api/v1/clients/{world['client']['id']}/wallet-links", await api.staff("operator"), 201)
    phone = visitors()
    await phone.get(_on_test_server(link["url"]))
    await phone.post("/wallet/open", {"t": URL(link["url"]).fragment.removeprefix("t=")})
    status, text, _ = await phone.get("/wallet/")
    assert status == 200
    _shown(text, "P")
    status, text, _ = await phone.get(f"/wallet/perks/{world['perk']}")
    assert status == 200
    _shown(text, "P")


async def test_a_typed_username_comes_back_escaped(visitors):
    visitor = visitors()
    await visitor.get("/portal/login")
    status, text, _ = await visitor.post("/portal/login", {"username": '"><script>alert(1)</script>', "password": "x"})
    assert status == 401 and "<script>alert" not in text and "&#34;&gt;&lt;script&gt;" in text


# ---- forged forms ------------------------------------------------------------------------------------------------

async def _program(api) -> dict[str, Any]:
    program = await api.program(yearly_quota=5, yearly_capacity=10)
    for role, store in (("manager", None), ("cashier", program["store"])):
        user, _ = await api.merchant_user(program["merchant"], role, store)
        program[f"{role}_login"] = user["username"]
    client, token = await api.member(program["tier"])
    return program | {"client": client, "client_token": token}


async def test_every_portal_form_refuses_a_missing_forged_or_borrowed_csrf_token(visitors, api, db):
    shop = await _program(api)
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    status, redeemed = await api.redeem(shop["cashier"], (await api.voucher(shop["client_token"], shop["perk"]))["token"])
    assert status == 201
    manager = await logged_in(visitors, shop["manager_login"])
    await manager.get("/portal/scan")
    own = manager.csrf
    # Another user's page gives a valid token, but for that user's session: it must not work for this one.
    other = await logged_in(visitors, shop["cashier_login"])
    await other.get("/portal/scan")
    borrowed = other.csrf
    # The page's own token with its last two characters changed (never to what they were).
    tampered = own[:-2] + ("BB" if own.endswith("AA") else "AA")
    forms = [
        ("/portal/scan", {"token": voucher["token"]}),
        ("/portal/redeem", {"token": voucher["token"], "idempotency_key": unique("k"), "store_id": shop["store"]}),
        (f"/portal/redemptions/{redeemed['id']}/void", {"reason": "forged"}),
        ("/portal/logout", {}),
    ]
    for path, form in forms:
        for csrf in (None, "", "forged", borrowed, tampered):
            data = form if csrf is None else form | {"csrf": csrf}
            status, _, _ = await manager.post(path, data, csrf=False)
            assert status == 403, (path, csrf)
    assert await db.fetchval("SELECT count(*) FROM redemptions WHERE voucher_id = $1", voucher["id"]) == 0
    assert await db.fetchval("SELECT status FROM redemptions WHERE id = $1::text::uuid", redeemed["id"]) == "redeemed"
    assert (await manager.get("/portal/scan"))[0] == 200  # the forged logout ended nothing
    # The control: the page's own token works.
    manager.csrf = own
    status, _, _ = await manager.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": "real"})
    assert status == 303


async def test_the_login_and_wallet_forms_refuse_forged_tokens(visitors, api):
    shop = await _program(api)
    victim = visitors()
    await victim.get("/portal/login")
    attacker = visitors()
    await attacker.get("/portal/login")
    for csrf in (None, "forged", attacker.csrf):
        data = {"username": shop["cashier_login"], "password": PASSWORD} | ({} if csrf is None else {"csrf": csrf})
        status, _, _ = await victim.post("/portal/login", data, csrf=False)
        assert status == 403 and victim.cookie("perks_portal") is None

    link = await api.ok("POST", f"/api/v1/clients/{shop['client']['id']}/wallet-links", await api.staff("operator"), 201)
    secret = URL(link["url"]).fragment.removeprefix("t=")
    phone = visitors()
    await phone.get(_on_test_server(link["url"]))
    for csrf in (None, "forged", attacker.csrf):
        status, _, _ = await phone.post("/wallet/open", {"t": secret} | ({} if csrf is None else {"csrf": csrf}), csrf=False)
        assert status == 403 and phone.cookie("perks_wallet") is None
    status, _, _ = await phone.post("/wallet/open", {"t": secret})
    assert status == 303  # the forged posts did not spend the link
    await phone.get("/wallet/")
    for csrf in (None, "forged", attacker.csrf):
        status, _, _ = await phone.post("/wallet/logout", {} if csrf is None else {"csrf": csrf}, csrf=False)
        assert status == 403
        async with phone.session.post(
            phone.url("/wallet/api/vouchers"), json={"perk": shop["perk"]}, headers={"X-CSRF-Token": csrf or ""}
        ) as response:
            assert response.status == 403
    assert (await phone.get("/wallet/"))[0] == 200


# ---- wallet links ------------------------------------------------------------------------------------------------

async def test_a_wallet_link_opened_ten_times_at_once_opens_once(visitors, api, db):
    client = await api.new_client()
    link = await api.ok("POST", f"/api/v1/clients/{client['id']}/wallet-links", await api.staff("operator"), 201)
    secret = URL(link["url"]).fragment.removeprefix("t=")
    phones = [visitors() for _ in range(10)]
    for phone in phones:
        await phone.get(_on_test_server(link["url"]))
    answers = await asyncio.gather(*(phone.post("/wallet/open", {"t": secret}) for phone in phones))
    assert sorted(status for status, _, _ in answers) == [303] + [410] * 9
    assert sum(phone.cookie("perks_wallet") is not None for phone in phones) == 1
    uses = await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'wallet_link.use' AND entity_id = $1", client["id"])
    assert uses == 1


async def test_a_wallet_link_expires_after_fifteen_minutes(visitors, api, clock):
    client = await api.new_client()
    operator = await api.staff("operator")
    minted_at = clock.now().replace(microsecond=0)
    clock.set(minted_at)
    in_time = await api.ok("POST", f"/api/v1/clients/{client['id']}/wallet-links", operator, 201)
    late = await api.ok("POST", f"/api/v1/clients/{client['id']}/wallet-links", operator, 201)
    clock.advance(minutes=14, seconds=59)
    phone = visitors()
    await phone.get(_on_test_server(in_time["url"]))
    status, _, _ = await phone.post("/wallet/open", {"t": URL(in_time["url"]).fragment.removeprefix("t=")})
    assert status == 303
    clock.advance(seconds=1)
    other = visitors()
    await other.get(_on_test_server(late["url"]))
    status, text, _ = await other.post("/wallet/open", {"t": URL(late["url"]).fragment.removeprefix("t=")})
    assert status == 410 and other.cookie("perks_wallet") is None
    assert datetime.fromisoformat(late["expires_at"]) == minted_at + timedelta(minutes=15)
