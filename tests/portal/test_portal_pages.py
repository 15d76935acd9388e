"""The merchant portal and the wallet without a browser: sessions, CSRF, throttling, languages, headers,
the scan-confirm-redeem flow, today's list and voids, the overview, wallet links and the wallet's vouchers."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from perks.core.errors import MESSAGES
from tests.support import PASSWORD, unique

PORTAL_DIR = Path(__file__).resolve().parents[2] / "merchant_portal"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
IDEMPOTENCY = re.compile(r'name="idempotency_key" value="([^"]+)"')
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Visitor:
    """One browser without JavaScript: its own cookies, and forms sent with the CSRF token of the page they came from."""

    def __init__(self, client: TestClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers or {}
        )
        self.csrf = ""

    def url(self, path: str) -> str:
        return str(self.client.make_url(path)) if path.startswith("/") else path

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url(path), allow_redirects=False, **kwargs) as response:
            text = await response.text()
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return response.status, text, response

    async def post(self, path: str, data: dict[str, str], csrf: bool = True, **kwargs: Any):
        form = ({"csrf": self.csrf} if csrf else {}) | data
        async with self.session.post(self.url(path), data=form, allow_redirects=False, **kwargs) as response:
            text = await response.text()
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return response.status, text, response

    async def login(self, username: str, password: str = PASSWORD):
        await self.get("/portal/login")
        return await self.post("/portal/login", {"username": username, "password": password})

    def cookie(self, name: str) -> Any:
        return next((c for c in self.session.cookie_jar if c.key == name), None)

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def visitors(client) -> AsyncIterator[Any]:
    """Makes visitors (each a separate browser) and closes them after the test."""
    made: list[Visitor] = []

    def make(**kwargs: Any) -> Visitor:
        made.append(Visitor(client, **kwargs))
        return made[-1]

    yield make
    for visitor in made:
        await visitor.close()


async def usernames(api, program: dict[str, Any]) -> dict[str, str]:
    """``manager_login`` and ``cashier_login``: usernames of new users of the program's merchant (its own users
    come as tokens only)."""
    names = {}
    for role, store in (("manager", None), ("cashier", program["store"])):
        user, _ = await api.merchant_user(program["merchant"], role, store)
        names[f"{role}_login"] = user["username"]
    return names


@pytest.fixture
async def shop(api) -> dict[str, Any]:
    """A perk (3 a year) that merchant A honours, its logins, and a client of the tier with a voucher."""
    program = await api.program(yearly_quota=3, yearly_capacity=10, perk={"name": "精致洗车"})
    program |= await usernames(api, program)
    client, client_token = await api.member(program["tier"], name="罗小升", phone="13800001234")
    program |= {"client": client, "client_token": client_token}
    return program


async def logged_in(visitors, username: str) -> Visitor:
    visitor = visitors()
    status, _, response = await visitor.login(username)
    assert status == 303 and response.headers["Location"] == "/portal/scan"
    return visitor


# --- headers, language ------------------------------------------------------------------------------------------

async def test_login_page_is_chinese_by_default_with_security_headers(visitors):
    status, text, response = await visitors().get("/portal/login")
    assert status == 200
    assert '<html lang="zh-CN">' in text and "商户登录" in text
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "img-src 'self' data: blob:" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers  # plain http: a browser would ignore it anyway
    assert "<script>" not in text and " style=" not in text and "onclick" not in text


async def test_static_files_and_errors_carry_the_headers_too(visitors):
    visitor = visitors()
    status, text, response = await visitor.get("/portal/static/vendor/jsqr/jsQR.js")
    assert status == 200 and "jsQR" in text
    assert response.headers["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in response.headers
    assert (PORTAL_DIR / "static/vendor/jsqr/LICENSE").read_text().startswith(" " * 10)
    status, text, response = await visitor.get("/portal/no-such-page")
    assert status == 404 and "未找到该记录" in text
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_english_on_request_and_remembered(visitors):
    visitor = visitors()
    status, text, _ = await visitor.get("/portal/login?lang=en")
    assert status == 200 and "Merchant login" in text and '<html lang="en">' in text
    _, text, _ = await visitor.get("/portal/login")
    assert "Merchant login" in text
    _, text, _ = await visitor.get("/portal/login?lang=zh-CN")
    assert "商户登录" in text
    _, text, _ = await visitor.get("/portal/login?lang=fr")
    assert "商户登录" in text


def test_catalogues_have_the_same_keys_and_explain_every_code():
    zh = json.loads((PORTAL_DIR / "translations/zh_CN.json").read_text(encoding="utf-8"))
    en = json.loads((PORTAL_DIR / "translations/en.json").read_text(encoding="utf-8"))
    assert set(zh) == set(en)
    for code in MESSAGES:
        assert f"error.{code}" in zh, code
    assert zh["error.quota_exhausted"] == "该客户本年度此项权益已用完"
    assert zh["error.voucher_already_redeemed"] == "该券已被使用"
    used = set()
    for path in [*PORTAL_DIR.rglob("*.html"), *PORTAL_DIR.glob("*.py")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_]+)["']""", path.read_text(encoding="utf-8")))
        used |= set(re.findall(r"""explain\(request,\s*"([a-z_]+)"\)""", path.read_text(encoding="utf-8")))
    keys = {key if "." in key else f"error.{key}" for key in used}
    assert keys and keys <= set(zh), keys - set(zh)
    for key, text in zh.items():
        assert re.findall(r"{\w+}", text) == re.findall(r"{\w+}", en[key]) or key == "common.times", key


# --- logging in and out -----------------------------------------------------------------------------------------

async def test_cashier_logs_in_and_out(visitors, shop):
    visitor = await logged_in(visitors, shop["cashier_login"])
    cookie = visitor.cookie("perks_portal")
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/portal"
    assert not cookie["secure"]
    status, text, _ = await visitor.get("/portal/scan")
    assert status == 200 and "扫码核销" in text and 'id="logout"' in text
    assert 'href="/portal/overview"' not in text  # a cashier has no overview
    status, _, response = await visitor.post("/portal/logout", {})
    assert status == 303 and response.headers["Location"] == "/portal/login"
    status, _, response = await visitor.get("/portal/scan")
    assert status == 303 and response.headers["Location"] == "/portal/login"


async def test_the_cookies_are_secure_behind_https(visitors, shop):
    visitor = visitors(headers={"X-Forwarded-Proto": "https"})
    _, _, response = await visitor.get("/portal/login")
    pre = response.cookies["perks_pre"]
    assert pre["secure"] and pre["httponly"]
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    # The jar keeps a Secure cookie from plain http, as a browser would: send it by hand.
    async with visitor.session.post(
        visitor.url("/portal/login"),
        data={"csrf": visitor.csrf, "username": shop["manager_login"], "password": PASSWORD},
        headers={"Cookie": f"perks_pre={pre.value}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        session = response.cookies["perks_portal"]
        assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


async def test_a_wrong_password_then_the_same_throttling_as_the_api(visitors, shop, api):
    visitor = visitors()
    for _ in range(5):
        status, text, _ = await visitor.login(shop["cashier_login"], "wrong password")
        assert status == 401 and "用户名或密码错误" in text
    status, text, _ = await visitor.login(shop["cashier_login"])
    assert status == 429 and "尝试次数过多" in text
    assert visitor.cookie("perks_portal") is None
    status, body = await api.call("POST", "/api/v1/auth/token", json={"username": shop["cashier_login"], "password": PASSWORD})
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")


async def test_bank_staff_may_not_log_in_to_the_portal(visitors, api):
    username = unique("admin")
    from perks.accounts.service import create_user
    from perks.core.auth import SYSTEM

    await create_user(api.db, SYSTEM, username=username, password=PASSWORD, role="admin")
    visitor = visitors()
    status, text, _ = await visitor.login(username)
    assert status == 403 and "此页面仅供商户员工登录" in text
    assert visitor.cookie("perks_portal") is None


async def test_forms_without_the_csrf_token_are_refused(visitors, shop):
    visitor = visitors()
    await visitor.get("/portal/login")
    status, text, _ = await visitor.post("/portal/login", {"username": shop["cashier_login"], "password": PASSWORD}, csrf=False)
    assert status == 403 and "页面已过期" in text
    assert visitor.cookie("perks_portal") is None
    visitor = await logged_in(visitors, shop["cashier_login"])
    status, _, _ = await visitor.post("/portal/scan", {"token": "x", "csrf": "forged"})
    assert status == 403
    # The pre-login token is no longer good once logged in: the session binds the form.
    status, _, _ = await visitor.post("/portal/logout", {}, csrf=False)
    assert status == 403
    assert (await visitor.get("/portal/scan"))[0] == 200


async def test_pages_need_a_session(visitors):
    visitor = visitors()
    for path in ("/portal/scan", "/portal/today", "/portal/overview", "/portal", "/portal/"):
        status, _, response = await visitor.get(path)
        assert status == 303 and response.headers["Location"] == "/portal/login", path
    status, text, _ = await visitor.post("/portal/redeem", {"token": "x"})
    assert status == 303


# --- scanning and redeeming -------------------------------------------------------------------------------------

async def _preview(visitor: Visitor, token: str) -> tuple[int, str]:
    await visitor.get("/portal/scan")
    status, text, _ = await visitor.post("/portal/scan", {"token": token})
    return status, text


async def test_scan_preview_confirm_and_a_double_tap_redeems_once(visitors, shop, api, db):
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    cashier = await logged_in(visitors, shop["cashier_login"])
    status, text = await _preview(cashier, voucher["token"])
    assert status == 200
    assert "罗*升" in text and "精致洗车" in text and "2 次" in text and "确认核销" in text
    assert "罗小升" not in text and "13800001234" not in text
    form = {"token": voucher["token"], "idempotency_key": IDEMPOTENCY.search(text).group(1), "store_id": ""}
    confirm_csrf = cashier.csrf
    status, text, _ = await cashier.post("/portal/redeem", form)
    assert status == 200 and "核销成功" in text and 'data-outcome="redeemed"' in text
    cashier.csrf = confirm_csrf
    status, text, _ = await cashier.post("/portal/redeem", form)
    assert status == 200 and "核销成功" in text and "未重复核销" in text
    assert await db.fetchval("SELECT count(*) FROM redemptions WHERE voucher_id = $1", voucher["id"]) == 1
    assert await api.counter_mismatches() == []
    status, text = await _preview(cashier, voucher["token"])
    assert status == 409 and "该券已被使用" in text and 'data-code="voucher_already_redeemed"' in text


async def test_two_taps_arriving_together_redeem_once(visitors, shop, api, db):
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    cashier = await logged_in(visitors, shop["cashier_login"])
    _, text = await _preview(cashier, voucher["token"])
    form = {"token": voucher["token"], "idempotency_key": IDEMPOTENCY.search(text).group(1), "store_id": ""}
    answers = await asyncio.gather(*(cashier.post("/portal/redeem", form) for _ in range(4)))
    assert [status for status, _, _ in answers] == [200] * 4
    assert all("核销成功" in text for _, text, _ in answers)
    assert await db.fetchval("SELECT count(*) FROM redemptions WHERE voucher_id = $1", voucher["id"]) == 1
    assert await api.counter_mismatches() == []


async def test_an_expired_voucher_is_refused_in_words(visitors, shop, api, clock):
    clock.set(datetime(2025, 8, 1, 2, 0, tzinfo=timezone.utc))
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    clock.advance(seconds=300 + 11)
    cashier = await logged_in(visitors, shop["cashier_login"])
    status, text = await _preview(cashier, voucher["token"])
    assert status == 410 and "该券已过期，请客户刷新二维码" in text


async def test_refusals_are_explained_in_words(visitors, shop):
    cashier = await logged_in(visitors, shop["cashier_login"])
    status, text = await _preview(cashier, "not-a-voucher")
    assert status == 400 and "这不是有效的权益券" in text
    status, text = await _preview(cashier, "")
    assert status == 400 and "请扫描二维码或输入券码" in text
    await cashier.get("/portal/scan?lang=en")
    status, text = await _preview(cashier, "x" * 5000)
    assert status == 400 and "This is not a valid voucher" in text


async def test_a_cashier_of_another_merchant_can_neither_redeem_nor_see(visitors, shop, api, db):
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    other = await api.program()
    other |= await usernames(api, other)
    stranger = await logged_in(visitors, other["cashier_login"])
    status, text = await _preview(stranger, voucher["token"])
    assert status == 409 and "本商户不提供此项权益" in text
    status, text, _ = await stranger.post(
        "/portal/redeem", {"token": voucher["token"], "idempotency_key": "k1", "store_id": ""}
    )
    assert status == 409 and "本商户不提供此项权益" in text
    # A cashier's store is its own, whatever the form says; a manager naming a store of merchant A is told nothing.
    status, text, _ = await stranger.post(
        "/portal/redeem", {"token": voucher["token"], "idempotency_key": "k2", "store_id": shop["store"]}
    )
    assert status == 409
    other_manager = await logged_in(visitors, other["manager_login"])
    await other_manager.get("/portal/scan")
    status, text, _ = await other_manager.post(
        "/portal/redeem", {"token": voucher["token"], "idempotency_key": "k3", "store_id": shop["store"]}
    )
    assert status == 404 and "未找到该记录" in text
    assert await db.fetchval("SELECT count(*) FROM redemptions") == 0

    status, body = await api.redeem(shop["cashier"], voucher["token"])
    assert status == 201, body
    _, text, _ = await stranger.get("/portal/today")
    assert body["id"] not in text and "罗*升" not in text
    await other_manager.get("/portal/today")
    status, text, _ = await other_manager.post(f"/portal/redemptions/{body['id']}/void", {"reason": "不是我们的"})
    assert status == 404 and "未找到该记录" in text
    assert await db.fetchval("SELECT status FROM redemptions WHERE id = $1::text::uuid", body["id"]) == "redeemed"


# --- today and voids --------------------------------------------------------------------------------------------

async def test_today_lists_the_store_redemptions_and_a_manager_voids_one(visitors, shop, api, db):
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    status, redeemed = await api.redeem(shop["cashier"], voucher["token"])
    assert status == 201
    cashier = await logged_in(visitors, shop["cashier_login"])
    status, text, _ = await cashier.get("/portal/today")
    assert status == 200 and redeemed["id"] in text and "罗*升" in text and "精致洗车" in text
    assert "罗小升" not in text and "void-form" not in text
    status, _, _ = await cashier.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": "试试"})
    assert status == 403

    manager = await logged_in(visitors, shop["manager_login"])
    status, text, _ = await manager.get("/portal/today")
    assert status == 200 and "void-form" in text
    status, text, _ = await manager.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": " "})
    assert status == 400 and "请填写作废原因" in text
    status, _, response = await manager.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": "顾客取消"})
    assert status == 303 and response.headers["Location"] == f"/portal/today?voided={redeemed['id']}"
    row = await db.fetchrow("SELECT status, void_reason FROM redemptions WHERE id = $1::text::uuid", redeemed["id"])
    assert dict(row) == {"status": "voided", "void_reason": "顾客取消"}
    entries = await api.audit_entries(entity_type="redemption", entity_id=redeemed["id"])
    assert entries[0]["action"] == "redemption.void" and entries[0]["actor"]["role"] == "manager"
    assert await api.counter_mismatches() == []
    status, text, _ = await manager.get(f"/portal/today?voided={redeemed['id']}")
    assert "已作废" in text and "顾客取消" in text
    status, text, _ = await manager.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": "再来"})
    assert status == 409 and "该笔核销已作废" in text


async def test_today_is_the_bank_time_zone_s_day(visitors, shop, api, clock):
    clock.set(datetime(2025, 5, 1, 15, 50, tzinfo=timezone.utc))  # 23:50 in Shanghai
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    _, redeemed = await api.redeem(shop["cashier"], voucher["token"])
    cashier = await logged_in(visitors, shop["cashier_login"])
    _, text, _ = await cashier.get("/portal/today")
    assert redeemed["id"] in text and "2025-05-01" in text and "23:50" in text
    clock.set(datetime(2025, 5, 1, 16, 10, tzinfo=timezone.utc))  # 00:10 the next day
    _, text, _ = await cashier.get("/portal/today")
    assert redeemed["id"] not in text and "2025-05-02" in text and "今天还没有核销记录" in text


async def test_a_manager_picks_the_store_among_several(visitors, shop, api, db):
    second = await api.store(shop["merchant"], name="二号店")
    manager = await logged_in(visitors, shop["manager_login"])
    status, text, _ = await manager.get("/portal/scan")
    assert status == 200 and '<select id="store" name="store_id">' in text and "二号店" in text
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    status, text, _ = await manager.post("/portal/scan", {"token": voucher["token"], "store_id": second["id"]})
    assert status == 200 and f'name="store_id" value="{second["id"]}"' in text
    key = IDEMPOTENCY.search(text).group(1)
    status, text, _ = await manager.post(
        "/portal/redeem", {"token": voucher["token"], "idempotency_key": key, "store_id": second["id"]}
    )
    assert status == 200 and "核销成功" in text
    assert await db.fetchval("SELECT store_id::text FROM redemptions WHERE voucher_id = $1", voucher["id"]) == second["id"]
    _, text, _ = await manager.get("/portal/today")
    assert "二号店" in text
    status, text, _ = await manager.post("/portal/scan", {"token": voucher["token"], "store_id": "not-a-store"})
    assert status == 404


async def test_the_void_window_is_the_service_s(visitors, shop, api, clock):
    clock.set(datetime(2025, 5, 1, 10, 0, tzinfo=timezone.utc))
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    _, redeemed = await api.redeem(shop["cashier"], voucher["token"])
    clock.advance(hours=25)
    manager = await logged_in(visitors, shop["manager_login"])
    await manager.get("/portal/today")
    status, text, _ = await manager.post(f"/portal/redemptions/{redeemed['id']}/void", {"reason": "迟了"})
    assert status == 409 and "已超过 24 小时" in text


async def test_overview_draws_capacity_and_months_for_managers_only(visitors, shop, api, clock):
    clock.set(datetime(2025, 3, 15, 4, 0, tzinfo=timezone.utc))
    voucher = await api.voucher(shop["client_token"], shop["perk"])
    assert (await api.redeem(shop["cashier"], voucher["token"]))[0] == 201
    manager = await logged_in(visitors, shop["manager_login"])
    status, text, _ = await manager.get("/portal/overview")
    assert status == 200 and "2025 年经营概览" in text
    assert 'id="capacity-chart"' in text and "已用 1 / 10" in text
    assert 'data-month="3" data-count="1"' in text and 'data-month="4" data-count="0"' in text
    cashier = await logged_in(visitors, shop["cashier_login"])
    status, text, _ = await cashier.get("/portal/overview")
    assert status == 403 and "您没有权限进行此操作" in text


# --- wallet links and the wallet ---------------------------------------------------------------------------------

def _on_test_server(url: str) -> str:
    # Links are built on the configured public base URL (here the default http://127.0.0.1:8080): the test
    # server listens on a port of its own, so the browser is sent to the link's path and fragment there.
    link = URL(url)
    return str(link.relative().with_fragment(link.fragment))


async def _wallet_link(api, client_id: str) -> dict[str, Any]:
    return await api.ok("POST", f"/api/v1/clients/{client_id}/wallet-links", await api.staff("operator"), 201)


async def test_bank_staff_mint_one_time_wallet_links(api, shop, db, clock):
    clock.set(datetime(2025, 7, 1, 8, 0, tzinfo=timezone.utc))
    link = await _wallet_link(api, shop["client"]["id"])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/wallet/open#t=[A-Za-z0-9_-]{43}", link["url"])
    assert datetime.fromisoformat(link["expires_at"]) == clock.now() + timedelta(minutes=15)
    secret = link["url"].split("t=")[1]
    stored = await db.fetchval("SELECT token_hash FROM wallet_links")
    assert secret.encode() not in stored and len(stored) == 32
    entries = await api.audit_entries(entity_type="client", entity_id=shop["client"]["id"])
    assert entries[0]["action"] == "wallet_link.create" and entries[0]["actor"]["role"] == "operator"
    assert (await api.ok("POST", f"/api/v1/clients/{shop['client']['id']}/wallet-links", await api.staff("admin"), 201))
    for role in ("auditor",):
        status, body = await api.call("POST", f"/api/v1/clients/{shop['client']['id']}/wallet-links", await api.staff(role))
        assert (status, body["error"]["code"]) == (403, "forbidden")
    for token in (shop["cashier"], shop["manager"], shop["client_token"]):
        assert (await api.call("POST", f"/api/v1/clients/{shop['client']['id']}/wallet-links", token))[0] == 403
    assert (await api.call("POST", f"/api/v1/clients/{shop['client']['id']}/wallet-links"))[0] == 401
    operator = await api.staff("operator")
    for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
        status, body = await api.call("POST", f"/api/v1/clients/{missing}/wallet-links", operator)
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_wallet_link_opens_the_wallet_once(visitors, api, shop, clock):
    link = await _wallet_link(api, shop["client"]["id"])
    phone = visitors()
    status, text, _ = await phone.get(_on_test_server(link["url"]))
    assert status == 200 and 'data-from-fragment="t"' in text and phone.cookie("perks_wallet") is None
    status, _, response = await phone.post("/wallet/open", {"t": link["url"].split("t=")[1]})
    assert status == 303 and response.headers["Location"] == "/wallet/"
    cookie = phone.cookie("perks_wallet")
    assert cookie["httponly"] and cookie["path"] == "/wallet"
    status, text, _ = await phone.get("/wallet/")
    assert status == 200 and "精致洗车" in text and "3 次" in text and "罗*升" in text
    entries = await api.audit_entries(entity_type="client", entity_id=shop["client"]["id"])
    assert entries[0]["action"] == "wallet_link.use" and entries[0]["actor"]["role"] == "client"

    again = visitors()
    await again.get(_on_test_server(link["url"]))
    status, text, _ = await again.post("/wallet/open", {"t": link["url"].split("t=")[1]})
    assert status == 410 and "此链接已失效" in text and again.cookie("perks_wallet") is None

    late = await _wallet_link(api, shop["client"]["id"])
    clock.advance(minutes=16)
    status, _, _ = await again.get(_on_test_server(late["url"]))
    status, text, _ = await again.post("/wallet/open", {"t": late["url"].split("t=")[1]})
    assert status == 410


async def _open_wallet(visitors, api, client_id: str) -> Visitor:
    link = await _wallet_link(api, client_id)
    phone = visitors()
    await phone.get(_on_test_server(link["url"]))
    status, _, _ = await phone.post("/wallet/open", {"t": link["url"].split("t=")[1]})
    assert status == 303
    return phone


async def _wallet_voucher(phone: Visitor, perk: str, csrf: str | None = None) -> tuple[int, Any]:
    headers = {"X-CSRF-Token": phone.csrf if csrf is None else csrf}
    async with phone.session.post(phone.url("/wallet/api/vouchers"), json={"perk": perk}, headers=headers) as response:
        return response.status, await response.json()


async def test_the_wallet_shows_a_fresh_voucher_that_redeems(visitors, api, shop):
    import zxingcpp
    from PIL import Image

    phone = await _open_wallet(visitors, api, shop["client"]["id"])
    status, text, response = await phone.get(f"/wallet/perks/{shop['perk']}")
    assert status == 200 and 'data-available="true"' in text and "精致洗车" in text
    assert response.headers["X-Frame-Options"] == "DENY"
    status, voucher = await _wallet_voucher(phone, shop["perk"])
    assert status == 201 and 280 <= voucher["seconds_left"] <= 300
    png = base64.b64decode(voucher["qr_png"].removeprefix("data:image/png;base64,"))
    token = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))[0].text
    status, body = await api.redeem(shop["cashier"], token)
    assert status == 201 and body["voucher_id"] == voucher["id"]

    assert (await _wallet_voucher(phone, shop["perk"], csrf="forged"))[0] == 403
    status, body = await _wallet_voucher(phone, "no_such_perk")
    assert (status, body["error"]["code"]) == (409, "not_entitled")
    assert body["error"]["message"] == "您当前的等级不享有此项权益"
    stranger = visitors()
    await stranger.get("/wallet/")
    status, body = await _wallet_voucher(stranger, shop["perk"], csrf="x")
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_the_wallet_says_clearly_when_nothing_remains(visitors, api, db, shop):
    await db.execute(
        "INSERT INTO client_yearly_usage (client_id, perk_code, year, used) "
        "SELECT $1::text::uuid, $2, y, 3 FROM generate_series(2000, 2100) AS y",
        shop["client"]["id"], shop["perk"],
    )
    phone = await _open_wallet(visitors, api, shop["client"]["id"])
    status, text, _ = await phone.get(f"/wallet/perks/{shop['perk']}")
    assert status == 200 and 'data-available="false"' in text and "您本年度此项权益已用完" in text
    status, body = await _wallet_voucher(phone, shop["perk"])
    assert (status, body["error"]["code"]) == (409, "quota_exhausted")
    assert body["error"]["message"] == "您本年度此项权益已用完"
    _, text, _ = await phone.get("/wallet/")
    assert "0 次" in text and "您本年度此项权益已用完" in text


async def test_the_wallet_needs_its_session(visitors):
    phone = visitors()
    status, text, _ = await phone.get("/wallet/")
    assert status == 401 and "请通过银行App重新打开" in text
    status, text, _ = await phone.post("/wallet/open", {"t": "guessed"}, csrf=False)
    assert status == 403
    await phone.get("/wallet/open")
    for guess in ("", "guessed", "x" * 500):
        status, text, _ = await phone.post("/wallet/open", {"t": guess})
        assert status == 410 and "此链接已失效" in text and phone.cookie("perks_wallet") is None
