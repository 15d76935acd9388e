"""The staff console in a real Chromium at a desk's 1280 px (and a tablet's): the loops a bank operator runs —
lower a partner's capacity and see a cashier refused at the new limit; edit the entitlement matrix and see the
client's wallet show the new quota; finalize a month and download its CSV; void a redemption and see quota and
capacity given back — and a screenshot of every console page in Chinese and in English."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest
from yarl import URL

from perks.accounts.service import create_user
from perks.core.auth import SYSTEM
from tests.browser_support import TABLET, Browsers, browsers_for
from tests.support import PASSWORD, unique

pytestmark = pytest.mark.browser


@pytest.fixture
async def browsers(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Browsers]:
    async for opened in browsers_for(request, tmp_path):
        opened.artifacts = opened.artifacts.parent / "console"
        yield opened


async def log_in(client, db, browsers: Browsers, role: str = "admin", lang: str = "zh-CN", **page: Any) -> Any:
    """A desk-sized page logged in to the console as a new staff user of ``role``."""
    username = unique(role)
    await create_user(db, SYSTEM, username=username, password=PASSWORD, role=role)
    desk = await browsers.desk(locale=lang, **page)
    await desk.goto(str(client.make_url(f"/console/login?lang={lang}")))
    await desk.fill("#username", username)
    await desk.fill("#password", PASSWORD)
    await desk.click("#login-submit")
    await desk.wait_for_url("**/console/dashboard")
    return desk


async def redeem_once(api, shop: dict[str, Any]) -> tuple[int, Any, dict[str, Any]]:
    """A new client of the shop's tier takes a voucher; the cashier redeems it: ``(status, body, client)``."""
    member, token = await api.member(shop["tier"])
    voucher = await api.voucher(token, shop["perk"])
    status, body = await api.redeem(shop["cashier"], voucher["token"])
    return status, body, member


async def test_a_lowered_capacity_refuses_the_cashier_at_the_new_limit(client, api, db, browsers):
    shop = await api.program(yearly_quota=5, yearly_capacity=10)
    for _ in range(2):
        status, body, _ = await redeem_once(api, shop)
        assert status == 201, body
    page = await log_in(client, db, browsers)
    await page.goto(str(client.make_url(f"/console/partners/{shop['merchant']}")))
    row = f"tr[data-perk='{shop['perk']}']"
    assert await page.inner_text(f"{row} .used") == "2"
    await page.fill(f"{row} input[name=yearly_capacity]", "3")
    await page.click(f"{row} button[type=submit]")
    await page.wait_for_selector("#notice")
    assert await page.inner_text(f"{row} .capacity") == "3"
    assert await page.inner_text(f"{row} .remaining") == "1"
    await browsers.shot(page, "capacity-lowered")
    status, body, _ = await redeem_once(api, shop)
    assert status == 201, body  # the third of three
    status, body, _ = await redeem_once(api, shop)
    assert status == 409 and body["error"]["code"] == "merchant_capacity_exhausted"
    await page.reload()
    assert await page.inner_text(f"{row} .remaining") == "0"


async def test_the_matrix_edit_shows_in_the_clients_wallet(client, api, db, browsers):
    shop = await api.program(yearly_quota=3)
    member, _ = await api.member(shop["tier"], name="罗小升")
    page = await log_in(client, db, browsers, role="operator")
    await page.goto(str(client.make_url("/console/programme")))
    cell = f"input[name='yearly_quota.{shop['tier']}.{shop['perk']}']"
    assert await page.input_value(cell) == "3"
    await page.fill(cell, "7")
    await page.fill(f"input[name='monthly_cap.{shop['tier']}.{shop['perk']}']", "2")
    await page.click("#matrix-save")
    await page.wait_for_selector("#notice")
    await browsers.shot(page, "matrix-saved")
    await page.goto(str(client.make_url(f"/console/clients/{member['id']}")))
    await page.click("#mint-link")
    link = await page.get_attribute("#wallet-link-url", "href")
    await browsers.shot(page, "wallet-link")
    wallet = await browsers.phone()
    # The link is built on PERKS_PUBLIC_URL; the test server listens elsewhere: open its path and fragment there.
    link_url = URL(link)
    await wallet.goto(str(client.make_url(link_url.path)) + "#" + link_url.fragment)
    await wallet.wait_for_url("**/wallet/")
    item = f"li[data-perk='{shop['perk']}']"
    await wallet.wait_for_selector(item)
    text = await wallet.inner_text(item)
    assert "已用 0 / 7 次" in text and "7 次" in text, text  # the new yearly quota, none used
    await browsers.shot(wallet, "wallet-new-quota")


async def test_a_month_finalized_and_its_csv_downloaded(client, api, db, clock, browsers, tmp_path):
    clock.set(datetime(2026, 4, 20, 4, 0, tzinfo=timezone.utc))
    shop = await api.program(yearly_quota=5, unit_price_fen=1234)
    for _ in range(2):
        status, body, _ = await redeem_once(api, shop)
        assert status == 201, body
    clock.set(datetime(2026, 5, 3, 2, 0, tzinfo=timezone.utc))
    page = await log_in(client, db, browsers)
    await page.goto(str(client.make_url("/console/settlement?month=2026-04")))
    await page.click(f"tr[data-merchant='{shop['merchant']}'] a")
    await page.wait_for_selector("#finalize-form")
    assert await page.inner_text("#total-amount") == "24.68"
    await page.check("#finalize-confirm")
    await page.click("#finalize")
    await page.wait_for_selector("#statement-status[data-status='finalized']")
    await browsers.shot(page, "finalized")
    async with page.expect_download() as downloading:
        await page.click("#csv-download")
    download = await downloading.value
    saved = tmp_path / "statement.csv"
    await download.save_as(saved)
    content = saved.read_bytes()
    status, api_csv = await api.call("GET", f"/api/v1/merchants/{shop['merchant']}/statements/2026-04?format=csv",
                                     await api.staff("auditor"))
    assert status == 200
    assert content.startswith(b"\xef\xbb\xbf") and content.decode("utf-8") == api_csv
    lines = content.decode("utf-8-sig").split("\r\n")
    assert lines[0].startswith("merchant_name,year,month,status,kind")
    assert lines[1].endswith(",1234,2,2468") and ",finalized,redemption," in lines[1]
    assert lines[2].endswith(",total,,,,,,,,2,2468")
    assert download.suggested_filename == f"statement-{shop['merchant']}-2026-04.csv"


async def test_a_void_gives_quota_and_capacity_back(client, api, db, browsers):
    shop = await api.program(yearly_quota=2, yearly_capacity=5)
    status, body, member = await redeem_once(api, shop)
    assert status == 201, body
    page = await log_in(client, db, browsers, role="operator", lang="en")
    await page.goto(str(client.make_url(f"/console/redemptions?merchant={shop['merchant']}")))
    row = f"tr[data-redemption='{body['id']}']"
    await page.click(f"{row} summary")
    await page.fill(f"{row} input[name=reason]", "scanned twice by mistake")
    await page.check(f"{row} .void-confirm")
    await browsers.shot(page, "void-confirm")
    await page.click(f"{row} button[type=submit]")
    await page.wait_for_selector("#notice")
    assert await page.get_attribute(row, "data-status") == "voided"
    await page.goto(str(client.make_url(f"/console/partners/{shop['merchant']}")))
    assert await page.inner_text(f"tr[data-perk='{shop['perk']}'] .used") == "0"
    assert await page.inner_text(f"tr[data-perk='{shop['perk']}'] .remaining") == "5"
    await page.goto(str(client.make_url(f"/console/clients/{member['id']}")))
    cells = await page.eval_on_selector_all(f"#entitlements tr[data-perk='{shop['perk']}'] td",
                                            "tds => tds.map(td => td.innerText)")
    assert cells[1:4] == ["2", "0", "2"], cells
    await browsers.shot(page, "given-back")


async def test_screenshots_of_every_console_page_in_both_languages(client, api, db, clock, browsers):
    clock.set(datetime(2026, 4, 20, 4, 0, tzinfo=timezone.utc))
    shop = await api.program(yearly_quota=3, yearly_capacity=10, perk={"name": "精致洗车"})
    _, _, member = await redeem_once(api, shop)
    clock.set(datetime(2026, 4, 20, 6, 0, tzinfo=timezone.utc))
    pages = {
        "dashboard": "/console/dashboard", "partners": "/console/partners",
        "partner": f"/console/partners/{shop['merchant']}", "programme": "/console/programme",
        "clients": "/console/clients", "client": f"/console/clients/{member['id']}",
        "settlement": "/console/settlement?month=2026-04",
        "statement": f"/console/settlement/{shop['merchant']}/2026-04", "redemptions": "/console/redemptions",
        "audit": "/console/audit", "imports": "/console/imports", "me": "/console/me",
    }
    for lang in ("zh-CN", "en"):
        page = await log_in(client, db, browsers, lang=lang)
        for name, path in pages.items():
            await page.goto(str(client.make_url(path)))
            assert await page.get_attribute("html", "lang") == lang
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280, (name, width)  # no sideways scrolling at a desk
            await browsers.shot(page, f"{lang}-{name}")
    tablet = await log_in(client, db, browsers, role="auditor", viewport=TABLET)
    for name in ("partner", "programme", "client"):
        await tablet.goto(str(client.make_url(pages[name])))
        width = await tablet.evaluate("document.documentElement.scrollWidth")
        assert width <= TABLET["width"], (name, width)
        await browsers.shot(tablet, f"tablet-{name}")
    login = await browsers.desk()
    await login.goto(str(client.make_url("/console/login")))
    await browsers.shot(login, "zh-CN-login")
