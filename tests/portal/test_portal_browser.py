"""The portal and the wallet in a real Chromium on a phone-sized screen: a client's wallet shows a QR code, the
cashier's camera (a fake one showing that very picture) reads it, and the voucher is redeemed exactly once."""

from __future__ import annotations

import base64
from typing import Any, AsyncIterator

import pytest
from yarl import URL

from tests.browser_support import Browsers, browsers_for
from tests.support import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
async def browsers(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Browsers]:
    async for opened in browsers_for(request, tmp_path):
        yield opened


async def _shop(api, **program: Any) -> dict[str, Any]:
    """A program (a perk a tier grants and a merchant honours) with logins of its manager and cashier."""
    shop = await api.program(**({"yearly_quota": 3, "yearly_capacity": 10, "perk": {"name": "精致洗车"}} | program))
    for role, store in (("manager", None), ("cashier", shop["store"])):
        user, _ = await api.merchant_user(shop["merchant"], role, store)
        shop[f"{role}_login"] = user["username"]
    return shop


async def _log_in(client, browsers: Browsers, page, username: str) -> None:
    await page.goto(str(client.make_url("/portal/login")))
    await browsers.shot(page, "login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/portal/scan")


async def _wallet_qr(client, api, browsers: Browsers, shop: dict[str, Any], client_id: str) -> tuple[bytes, str]:
    """The QR code a client's wallet shows (a PNG) and its voucher's id, reached through a one-time link."""
    link = await api.ok("POST", f"/api/v1/clients/{client_id}/wallet-links", await api.staff("operator"), 201)
    wallet = await browsers.phone()
    # The link is built on the configured public URL; the test server listens elsewhere, so go to its path there.
    link_url = URL(link["url"])
    await wallet.goto(str(client.make_url(link_url.path)) + "#" + link_url.fragment)
    await wallet.wait_for_url("**/wallet/")
    await wallet.wait_for_selector(f"li[data-perk='{shop['perk']}']")
    await browsers.shot(wallet, "wallet")
    await wallet.click(f"li[data-perk='{shop['perk']}'] a")
    await wallet.wait_for_selector("#qr:not(.hidden)")
    assert "精致洗车" in await wallet.inner_text("#perk-name")
    assert "二维码有效期剩余" in await wallet.inner_text("#countdown")
    await browsers.shot(wallet, "wallet-qr")
    source = await wallet.get_attribute("#qr", "src")
    assert source and source.startswith("data:image/png;base64,")
    return base64.b64decode(source.split(",", 1)[1]), await wallet.get_attribute("#qr", "data-voucher-id")


async def test_a_wallet_qr_read_by_the_camera_is_redeemed_once(client, api, db, browsers):
    shop = await _shop(api)
    member, _ = await api.member(shop["tier"], name="罗小升")
    png, voucher_id = await _wallet_qr(client, api, browsers, shop, member["id"])

    cashier = await browsers.phone(camera_png=png)
    await _log_in(client, browsers, cashier, shop["cashier_login"])
    # The camera starts by itself and the page sends what it reads: the preview follows.
    await cashier.wait_for_selector("#confirm")
    assert await cashier.inner_text("#preview-client") == "罗*升"
    assert await cashier.inner_text("#preview-perk") == "精致洗车"
    assert await cashier.inner_text("#preview-remaining") == "2 次"
    await browsers.shot(cashier, "preview")
    await cashier.click("#confirm")
    await cashier.wait_for_selector("#result[data-outcome='redeemed']")
    assert "核销成功" in await cashier.inner_text("body")
    assert await cashier.get_attribute("body", "class") == "result ok"
    await browsers.shot(cashier, "redeemed")
    row = await db.fetchrow("SELECT status, store_id::text FROM redemptions WHERE voucher_id = $1", voucher_id)
    assert dict(row) == {"status": "redeemed", "store_id": shop["store"]}

    # Ready for the next client: the same QR code again is refused, in words, in Chinese.
    await cashier.click("#next")
    await cashier.wait_for_selector("#result[data-outcome='refused']")
    assert await cashier.inner_text("#reason") == "该券已被使用"
    assert await cashier.get_attribute("body", "class") == "result refused"
    await browsers.shot(cashier, "already-redeemed")
    assert await db.fetchval("SELECT count(*) FROM redemptions") == 1


async def test_a_pasted_token_is_redeemed_and_a_manager_voids_it(client, api, db, browsers):
    shop = await _shop(api)
    _, client_token = await api.member(shop["tier"], name="Alice Smith")
    voucher = await api.voucher(client_token, shop["perk"])

    cashier = await browsers.phone()
    await _log_in(client, browsers, cashier, shop["cashier_login"])
    await cashier.wait_for_selector("#scanner.live")
    await browsers.shot(cashier, "scan-page")
    await cashier.fill("#token", voucher["token"])
    await cashier.press("#token", "Enter")
    await cashier.wait_for_selector("#confirm")
    assert await cashier.inner_text("#preview-client") == "A*********h"
    # Two quick taps: one redemption.
    await cashier.dblclick("#confirm")
    await cashier.wait_for_selector("#result[data-outcome='redeemed']")
    await browsers.shot(cashier, "pasted-redeemed")
    redemption_id = await db.fetchval("SELECT id::text FROM redemptions WHERE voucher_id = $1", voucher["id"])
    assert await db.fetchval("SELECT count(*) FROM redemptions") == 1

    manager = await browsers.phone()
    await _log_in(client, browsers, manager, shop["manager_login"])
    await manager.click("text=今日记录")
    item = manager.locator(f"li[data-id='{redemption_id}']")
    assert "A*********h" in await item.inner_text()
    await browsers.shot(manager, "today")
    await item.locator("summary").click()
    await item.locator("input[name='reason']").fill("顾客取消")
    await item.locator("button[type='submit']").click()
    await manager.wait_for_selector("#voided-notice")
    assert await manager.get_attribute(f"li[data-id='{redemption_id}']", "data-status") == "voided"
    await browsers.shot(manager, "voided")
    assert await db.fetchval("SELECT status FROM redemptions WHERE id = $1::uuid", redemption_id) == "voided"

    _, other_token = await api.member(shop["tier"], name="张三")
    second = await api.voucher(other_token, shop["perk"])
    assert (await api.redeem(shop["cashier"], second["token"]))[0] == 201
    await manager.click("text=经营概览")
    await manager.wait_for_selector("#capacity-chart")
    assert "已用 1 / 10" in await manager.text_content("#capacity-chart")
    await browsers.shot(manager, "overview")


async def test_a_cashier_of_another_merchant_cannot_redeem(client, api, db, browsers):
    shop = await _shop(api)
    other = await _shop(api)
    member, _ = await api.member(shop["tier"], name="罗升")
    png, voucher_id = await _wallet_qr(client, api, browsers, shop, member["id"])

    stranger = await browsers.phone(camera_png=png)
    await _log_in(client, browsers, stranger, other["cashier_login"])
    await stranger.wait_for_selector("#result[data-outcome='refused']")
    assert await stranger.inner_text("#reason") == "本商户不提供此项权益"
    await browsers.shot(stranger, "other-merchant-refused")

    # The last resort, a picture of the code uploaded, reads it too (and is refused alike).
    upload = await browsers.phone()
    await _log_in(client, browsers, upload, other["cashier_login"])
    await upload.set_input_files("#upload", files=[{"name": "qr.png", "mimeType": "image/png", "buffer": png}])
    await upload.wait_for_selector("#result[data-outcome='refused']")
    assert await upload.inner_text("#reason") == "本商户不提供此项权益"
    assert await db.fetchval("SELECT count(*) FROM redemptions") == 0

    await upload.click("#next")
    await upload.click("text=今日记录")
    await upload.wait_for_selector("#no-redemptions")
    await browsers.shot(upload, "other-merchant-today")


async def test_the_portal_speaks_english_on_request(client, api, browsers):
    shop = await _shop(api)
    page = await browsers.phone()
    await page.goto(str(client.make_url("/portal/login")))
    await page.click("#lang-switch")
    await page.wait_for_selector("text=Merchant login")
    await page.fill("#username", shop["cashier_login"])
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/portal/scan")
    await page.fill("#token", "not-a-voucher")
    await page.press("#token", "Enter")
    await page.wait_for_selector("#result[data-outcome='refused']")
    assert await page.inner_text("#reason") == "This is not a valid voucher"
    await browsers.shot(page, "english-refusal")


async def test_the_wallet_renews_its_code_before_it_expires_and_says_when_nothing_remains(client, api, db, browsers):
    shop = await _shop(api, perk={"name": "精致洗车", "voucher_ttl_seconds": 30})
    spent = await api.perk(name="机场贵宾厅")
    await api.entitle(shop["tier"], spent["code"], 0)
    member, _ = await api.member(shop["tier"], name="罗小升")
    _, first_id = await _wallet_qr(client, api, browsers, shop, member["id"])
    wallet = browsers.opened[-1].contexts[0].pages[0]
    # Renewed with 15 s left: the code on screen changes, and only the newest voucher is live.
    await wallet.wait_for_function(
        "first => document.getElementById('qr').dataset.voucherId !== first", arg=first_id, timeout=30_000
    )
    newest = await wallet.get_attribute("#qr", "data-voucher-id")
    ids = await db.fetch("SELECT id FROM vouchers WHERE client_id = $1::text::uuid ORDER BY seq", member["id"])
    assert [row["id"] for row in ids] == [first_id, newest]
    await browsers.shot(wallet, "wallet-renewed")

    await wallet.click("#back")
    spent_item = wallet.locator(f"li[data-perk='{spent['code']}']")
    assert "您本年度此项权益已用完" in await spent_item.inner_text()
    await spent_item.locator("a").click()
    await wallet.wait_for_selector("#voucher-error")
    assert await wallet.inner_text("#voucher-error") == "您本年度此项权益已用完"
    assert await wallet.locator("#qr").count() == 0
    await browsers.shot(wallet, "wallet-nothing-left")
