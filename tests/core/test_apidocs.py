"""The API reference: Swagger UI served from our own vendored files (with their licence) under a strict CSP,
grouped by tag, and "try it out" with a bearer token working against the running service, in a real Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.browser_support import Browsers, browsers_for

VENDORED = Path(__file__).resolve().parents[2] / "perks" / "core" / "static" / "swagger-ui"


@pytest.fixture
async def browsers(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Browsers]:
    async for opened in browsers_for(request, tmp_path):
        opened.artifacts = opened.artifacts.parent / "apidocs"
        yield opened


async def test_the_page_loads_vendored_swagger_ui_under_a_strict_csp(client):
    async with client.get("/api/docs") as response:
        assert response.status == 200
        text = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "<script>" not in text and "http://" not in text and "https://" not in text  # no CDN
    scripts = re.findall(r'<script src="([^"]+)"', text)
    assert scripts == ["/api/docs/static/swagger-ui/swagger-ui-bundle.js", "/api/docs/static/api-docs.js"]
    for path in scripts + ["/api/docs/static/swagger-ui/swagger-ui.css"]:
        async with client.get(path) as response:
            assert response.status == 200, path
    # The outline for readers without JavaScript is grouped by tag.
    assert "<h2>catalogue</h2>" in text and "/api/v1/auth/token" in text
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    assert "SmartBear" in (VENDORED / "NOTICE").read_text()


@pytest.mark.browser
async def test_try_it_out_with_a_bearer_token_in_chromium(client, api, browsers):
    await api.tier(name="金卡")
    token = await api.staff("auditor")
    page = await browsers.desk()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    await page.goto(str(client.make_url("/api/docs")))
    # Past a hundred operations Swagger UI renders only the groups in view (a virtual list): the first tags show,
    # sorted, and the filter box narrows the page to one group.
    await page.wait_for_selector(".opblock-tag")
    tags = await page.eval_on_selector_all(".opblock-tag", "nodes => nodes.map(n => n.dataset.tag)")
    assert tags and tags == sorted(tags) and tags[0] == "accounts", tags
    await browsers.shot(page, "api-docs")
    await page.fill(".operation-filter-input", "catalogue")
    await page.wait_for_selector("#operations-catalogue-get_api_v1_tiers")
    tags = await page.eval_on_selector_all(".opblock-tag", "nodes => nodes.map(n => n.dataset.tag)")
    assert tags == ["catalogue"], tags
    await page.click(".btn.authorize")
    await page.fill(".auth-container input", token)
    await page.click(".auth-btn-wrapper .btn.modal-btn.auth.authorize")
    await page.click(".btn-done, .close-modal")
    await page.click("#operations-catalogue-get_api_v1_tiers .opblock-summary")
    await page.click("#operations-catalogue-get_api_v1_tiers .try-out__btn")
    await page.click("#operations-catalogue-get_api_v1_tiers .execute")
    await page.wait_for_selector("#operations-catalogue-get_api_v1_tiers .live-responses-table .response-col_status")
    status = await page.inner_text("#operations-catalogue-get_api_v1_tiers .live-responses-table .response .response-col_status")
    body = await page.inner_text("#operations-catalogue-get_api_v1_tiers .live-responses-table")
    assert status.strip() == "200" and "金卡" in body
    await browsers.shot(page, "api-docs-try-it")
    assert not [p for p in problems if "Content Security Policy" in p], problems
