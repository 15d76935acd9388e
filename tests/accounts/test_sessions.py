"""Sessions an attacker cannot keep: logouts that end sessions on the server, blocked clients, the pre-session
cookie, and wallet links built on the configured public URL rather than on request headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import timedelta
from typing import Any

from yarl import URL

from perks.app import create_app
from perks.core.auth import derive_key
from tests.support import PASSWORD, Api
from tests.portal.test_portal_pages import _on_test_server, logged_in, shop, visitors  # noqa: F401

ME = "/api/v1/me"


def _code(body: Any) -> str:
    return body["error"]["code"]


async def _open_wallet(visitors, api, client_id: str):  # noqa: F811
    link = await api.ok("POST", f"/api/v1/clients/{client_id}/wallet-links", await api.staff("operator"), 201)
    phone = visitors()
    await phone.get(_on_test_server(link["url"]))
    status, _, _ = await phone.post("/wallet/open", {"t": URL(link["url"]).fragment.removeprefix("t=")})
    assert status == 303
    return phone


async def _with_cookie(visitor, path: str, name: str, value: str) -> tuple[int, str, Any]:
    """A request carrying only ``name=value``, as an attacker replaying a copied cookie would send it."""
    async with visitor.session.get(
        visitor.url(path), headers={"Cookie": f"{name}={value}"}, allow_redirects=False
    ) as response:
        return response.status, await response.text(), response


# ---- the portal ------------------------------------------------------------------------------------------------

async def test_portal_logout_ends_the_session_on_the_server_and_on_every_device(visitors, shop, api):  # noqa: F811
    visitor = await logged_in(visitors, shop["cashier_login"])
    copied = visitor.cookie("perks_portal").value
    other_device = await api.login(shop["cashier_login"])
    assert (await _with_cookie(visitors(), "/portal/scan", "perks_portal", copied))[0] == 200
    await visitor.get("/portal/scan")
    status, _, _ = await visitor.post("/portal/logout", {})
    assert status == 303
    status, _, response = await _with_cookie(visitors(), "/portal/scan", "perks_portal", copied)
    assert status == 303 and response.headers["Location"] == "/portal/login"
    # Bumping the generation logs out every device of that user (documented), the API's tokens too.
    assert (await api.call("GET", "/api/v1/merchant/redemptions", other_device))[0] == 401
    logouts = [e for e in await api.audit_entries(entity_type="user") if e["action"] == "user.logout"]
    assert [e["actor"]["username"] for e in logouts] == [shop["cashier_login"]]
    again = await logged_in(visitors, shop["cashier_login"])
    assert (await again.get("/portal/scan"))[0] == 200


async def test_a_disabled_cashiers_portal_session_stops_at_once(visitors, shop, api, db):  # noqa: F811
    visitor = await logged_in(visitors, shop["cashier_login"])
    assert (await visitor.get("/portal/today"))[0] == 200
    user_id = await db.fetchval("SELECT id::text FROM users WHERE username = $1", shop["cashier_login"])
    path = f"/api/v1/merchants/{shop['merchant']}/users/{user_id}"
    await api.ok("PATCH", path, await api.staff("operator"), json={"status": "disabled"})
    status, _, response = await visitor.get("/portal/today")
    assert status == 303 and response.headers["Location"] == "/portal/login"
    status, text, _ = await visitor.post("/portal/scan", {"token": "x"})
    assert status == 303
    status, text, _ = await visitor.login(shop["cashier_login"])
    assert status == 401 and "用户名或密码错误" in text


async def test_an_api_logout_ends_the_token(api, shop):  # noqa: F811
    token = await api.login(shop["manager_login"])
    assert (await api.call("POST", "/api/v1/auth/logout", token))[0] == 204
    status, body = await api.call("GET", "/api/v1/merchant/usage", token)
    assert (status, _code(body)) == (401, "unauthorized")
    assert (await api.call("POST", "/api/v1/auth/logout", token))[0] == 401


# ---- the wallet and blocked clients ----------------------------------------------------------------------------

async def test_wallet_logout_ends_the_client_sessions_on_the_server(visitors, api, shop):  # noqa: F811
    phone = await _open_wallet(visitors, api, shop["client"]["id"])
    copied = phone.cookie("perks_wallet").value
    assert (await api.call("GET", ME, shop["client_token"]))[0] == 200
    await phone.get("/wallet/")
    status, text, _ = await phone.post("/wallet/logout", {})
    assert status == 200 and 'id="closed"' in text
    status, text, _ = await _with_cookie(visitors(), "/wallet/", "perks_wallet", copied)
    assert status == 401 and "请通过银行App重新打开" in text
    # Every session of the client ends, the bank app's too: it mints a new one when the client next opens it.
    assert (await api.call("GET", ME, shop["client_token"]))[0] == 401
    assert (await api.call("GET", ME, await api.client_session(shop["client"]["id"])))[0] == 200


async def test_a_blocked_client_loses_every_session_link_and_voucher_at_once(visitors, api, shop):  # noqa: F811
    client_id = shop["client"]["id"]
    phone = await _open_wallet(visitors, api, client_id)
    await phone.get(f"/wallet/perks/{shop['perk']}")
    unused = await api.ok("POST", f"/api/v1/clients/{client_id}/wallet-links", await api.staff("operator"), 201)
    operator = await api.staff("operator")
    await api.ok("PATCH", f"/api/v1/clients/{client_id}", operator, json={"status": "blocked"})

    status, body = await api.call("GET", ME, shop["client_token"])
    assert (status, _code(body)) == (401, "unauthorized")
    assert (await phone.get("/wallet/"))[0] == 401
    async with phone.session.post(
        phone.url("/wallet/api/vouchers"), json={"perk": shop["perk"]}, headers={"X-CSRF-Token": phone.csrf}
    ) as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"
    for role in ("operator", "admin"):
        token = await api.staff(role)
        for path in (f"/api/v1/clients/{client_id}/sessions", f"/api/v1/clients/{client_id}/wallet-links"):
            status, body = await api.call("POST", path, token)
            assert (status, _code(body)) == (403, "client_blocked"), path
    stranger = visitors()
    await stranger.get(_on_test_server(unused["url"]))
    status, text, _ = await stranger.post("/wallet/open", {"t": URL(unused["url"]).fragment.removeprefix("t=")})
    assert status == 410 and stranger.cookie("perks_wallet") is None

    # Unblocking lets new sessions in; the sessions and links the block ended stay ended.
    await api.ok("PATCH", f"/api/v1/clients/{client_id}", operator, json={"status": "active"})
    assert (await api.call("GET", ME, shop["client_token"]))[0] == 401
    assert (await phone.get("/wallet/"))[0] == 401
    await stranger.get(_on_test_server(unused["url"]))
    status, text, _ = await stranger.post("/wallet/open", {"t": URL(unused["url"]).fragment.removeprefix("t=")})
    assert status == 410 and stranger.cookie("perks_wallet") is None
    assert (await _open_wallet(visitors, api, client_id)).cookie("perks_wallet") is not None
    assert (await api.call("GET", ME, await api.client_session(client_id)))[0] == 200


# ---- the pre-session cookie ------------------------------------------------------------------------------------

def _csrf_for(config, seed: str) -> str:
    """The CSRF token the service would pair with ``seed``: what an attacker who knew the key could compute."""
    key = derive_key(config.secret, "portal-csrf")
    return base64.urlsafe_b64encode(hmac.new(key, seed.encode(), hashlib.sha256).digest()[:24]).decode()


async def _post_login(visitor, shop: dict[str, Any], pre: str, csrf: str) -> int:  # noqa: F811
    form = {"csrf": csrf, "username": shop["cashier_login"], "password": PASSWORD}
    async with visitor.session.post(
        visitor.url("/portal/login"), data=form, headers={"Cookie": f"perks_pre={pre}"}, allow_redirects=False
    ) as response:
        return response.status


async def test_a_planted_pre_session_value_is_refused(visitors, shop, config, clock):  # noqa: F811
    planted = "attacker-chosen-value"
    victim = visitors()
    status, text, response = await _with_cookie(victim, "/portal/login", "perks_pre", planted)
    issued = response.cookies["perks_pre"].value
    assert status == 200 and issued != planted and _csrf_for(config, planted) not in text
    assert _csrf_for(config, issued) in text
    # A form posted with the planted value is refused, even with the CSRF token that would match it.
    assert await _post_login(visitors(), shop, planted, _csrf_for(config, planted)) == 403
    nonce, at, signature = issued.split(".")
    for forged in (f"x{nonce}.{at}.{signature}", f"{nonce}.{int(at) + 1}.{signature}", f"{nonce}.{at}", issued + "x"):
        assert await _post_login(visitors(), shop, forged, _csrf_for(config, forged)) == 403, forged
    # The issued value works once: a successful login drops it.
    status, _, _ = await victim.get("/portal/login")
    pre = victim.cookie("perks_pre").value
    status, _, response = await victim.post("/portal/login", {"username": shop["cashier_login"], "password": PASSWORD})
    assert status == 303 and response.cookies["perks_pre"].value == ""
    # And it lasts an hour at most.
    clock.set(clock.now() + timedelta(hours=1, minutes=1))
    assert await _post_login(visitors(), shop, pre, _csrf_for(config, pre)) == 403


# ---- wallet links' URL -----------------------------------------------------------------------------------------

async def test_wallet_links_use_the_configured_public_url_never_the_request_headers(
    config, clock, db, aiohttp_client, shop, api  # noqa: F811
):
    spoofed = {"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    client_id = shop["client"]["id"]
    link = await api.ok(
        "POST", f"/api/v1/clients/{client_id}/wallet-links", await api.staff("operator"), 201, headers=spoofed
    )
    assert link["url"].startswith(f"http://{config.host}:{config.port}/wallet/open#t=")
    public = await aiohttp_client(create_app(replace(config, public_url="https://perks.bank.example/app"), clock=clock))
    other = Api(public, db)
    link = await other.ok(
        "POST", f"/api/v1/clients/{client_id}/wallet-links", await other.staff("operator"), 201, headers=spoofed
    )
    assert URL(link["url"]).with_fragment(None) == URL("https://perks.bank.example/app/wallet/open")
    assert "evil" not in link["url"]


# ---- the opt-out flag ------------------------------------------------------------------------------------------

async def test_a_route_may_fold_the_session_check_into_its_own_statement(config, clock, db, aiohttp_client):
    from aiohttp import web

    from perks.core.endpoint import endpoint

    @endpoint(roles={"auditor"}, session_check=False)
    async def unchecked(request: web.Request) -> web.Response:
        """A route that would check the generation itself (the redemption routes do, in their first statement)."""
        return web.json_response({"ok": True})

    @endpoint(roles={"auditor"})
    async def checked(request: web.Request) -> web.Response:
        """The default."""
        return web.json_response({"ok": True})

    app = create_app(config, clock=clock)
    app.router.add_get("/test/unchecked", unchecked)
    app.router.add_get("/test/checked", checked)
    api = Api(await aiohttp_client(app), db)
    token = await api.staff("auditor")
    assert (await api.call("POST", "/api/v1/auth/logout", token))[0] == 204
    assert (await api.call("GET", "/test/checked", token))[0] == 401
    assert (await api.call("GET", "/test/unchecked", token)) == (200, {"ok": True})
