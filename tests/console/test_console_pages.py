"""The staff console without a browser: logins and roles, every page for each staff role, every form (an auditor's
POST refused, CSRF refused, another session's form refused), validation beside the fields, audited changes."""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

import pytest

from perks.accounts.service import create_user
from perks.core.auth import SYSTEM
from tests.support import PASSWORD, unique
from tests.portal.test_portal_pages import Visitor

STAFF = ("admin", "operator", "auditor")


class Staff(Visitor):
    """A browser logged in to the console (or not yet)."""

    async def login(self, username: str, password: str = PASSWORD):  # type: ignore[override]
        await self.get("/console/login")
        return await self.post("/console/login", {"username": username, "password": password})


@pytest.fixture
async def staff(client, db) -> AsyncIterator[Any]:
    """``await staff(role)``: a new console user of ``role``, logged in, in English unless ``lang`` says."""
    made: list[Staff] = []

    async def make(role: str, lang: str = "en") -> Staff:
        username = unique(role)
        await create_user(db, SYSTEM, username=username, password=PASSWORD, role=role)
        visitor = Staff(client)
        made.append(visitor)
        await visitor.get(f"/console/login?lang={lang}")
        status, _, response = await visitor.post("/console/login", {"username": username, "password": PASSWORD})
        assert status == 303 and response.headers["Location"] == "/console/dashboard"
        visitor.username = username  # type: ignore[attr-defined]
        await visitor.get("/console/me")  # the session's CSRF token, as a page of the console would hold it
        return visitor

    yield make
    for visitor in made:
        await visitor.close()


def field_error(text: str, name: str) -> str | None:
    found = re.search(rf'class="field-error"[^>]*data-field="{re.escape(name)}">([^<]+)<', text)
    return found.group(1) if found else None


# --- logging in ------------------------------------------------------------------------------------------------

async def test_login_page_is_chinese_by_default_with_strict_headers(client):
    visitor = Staff(client)
    try:
        status, text, response = await visitor.get("/console/login")
        assert status == 200 and "银行员工登录" in text and '<html lang="zh-CN">' in text
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in text and " style=" not in text
        status, _, response = await visitor.get("/console/dashboard")
        assert status == 303 and response.headers["Location"] == "/console/login"
    finally:
        await visitor.close()


async def test_staff_log_in_see_who_they_are_and_log_out(staff):
    for role in STAFF:
        visitor = await staff(role)
        status, text, _ = await visitor.get("/console/me")
        assert status == 200 and f'data-role="{role}"' in text and visitor.username in text
        status, _, response = await visitor.post("/console/logout", {})
        assert status == 303 and response.headers["Location"] == "/console/login"
        status, _, _ = await visitor.get("/console/me")
        assert status == 303


async def test_merchant_users_and_wrong_passwords_are_refused_and_throttled(client, api, db):
    program = await api.program()
    user, _ = await api.merchant_user(program["merchant"], "manager")
    visitor = Staff(client)
    try:
        status, text, _ = await visitor.login(user["username"])
        assert status == 403 and "银行员工" in text and visitor.cookie("perks_console") is None
        username = unique("admin")
        await create_user(db, SYSTEM, username=username, password=PASSWORD, role="admin")
        for _ in range(5):
            status, _, _ = await visitor.login(username, "wrong password!")
            assert status == 401
        status, text, _ = await visitor.login(username)
        assert status == 429 and visitor.cookie("perks_console") is None
    finally:
        await visitor.close()


async def test_the_portal_session_does_not_open_the_console(client, api):
    program = await api.program()
    user, _ = await api.merchant_user(program["merchant"], "manager")
    visitor = Visitor(client)
    try:
        await visitor.login(user["username"])
        status, _, response = await visitor.get("/console/dashboard")
        assert status == 303 and response.headers["Location"] == "/console/login"
    finally:
        await visitor.close()


async def redeemed_program(api, clock, at, **program: Any) -> dict[str, Any]:
    """A program with one redemption at ``at``; its ``redemption`` id and its client's ``client_id``."""
    clock.set(at)
    shop = await api.program(**({"yearly_quota": 3, "yearly_capacity": 10, "unit_price_fen": 1500} | program))
    member, token = await api.member(shop["tier"])
    voucher = await api.voucher(token, shop["perk"])
    status, body = await api.redeem(shop["cashier"], voucher["token"])
    assert status == 201, body
    return shop | {"redemption": body["id"], "client_id": member["id"]}


# --- dashboard and partners ------------------------------------------------------------------------------------

async def test_dashboard_draws_this_years_figures_for_every_staff_role(staff, api):
    program = await api.program(yearly_quota=3, yearly_capacity=10)
    member, token = await api.member(program["tier"])
    voucher = await api.voucher(token, program["perk"])
    status, body = await api.redeem(program["cashier"], voucher["token"])
    assert status == 201, body
    for role in STAFF:
        visitor = await staff(role, lang="zh-CN" if role == "auditor" else "en")
        status, text, _ = await visitor.get("/console/dashboard")
        assert status == 200 and 'id="month-chart"' in text and 'id="capacity-chart"' in text
        assert re.search(r'data-key="[^"]*:' + program["perk"] + '" data-value="1"', text)
        assert 'id="quota-table"' in text and 'id="ratings"' in text


async def test_partner_list_searches_and_filters_by_status(staff, api):
    wanted = await api.merchant(name=unique("蓝天洗车"))
    other = await api.merchant(name=unique("理发"))
    visitor = await staff("auditor")
    status, text, _ = await visitor.get(f"/console/partners?q={wanted['name'][:6]}")
    assert status == 200 and wanted["id"] in text and other["id"] not in text
    status, text, _ = await visitor.get("/console/partners?status=suspended")
    assert wanted["id"] not in text
    assert 'id="merchant-create"' not in text  # an auditor is offered no forms


async def test_partner_page_and_every_partner_form(staff, api, db):
    program = await api.program(yearly_capacity=10, unit_price_fen=1500)
    merchant = program["merchant"]
    extra = await api.perk()
    operator = await staff("operator")
    status, text, _ = await operator.get(f"/console/partners/{merchant}")
    assert status == 200 and f'data-perk="{program["perk"]}"' in text and 'id="store-form"' in text

    # Edit an agreement: lower the capacity, keep the price; audited as the API audits it.
    path = f"/console/partners/{merchant}/agreements"
    status, _, response = await operator.post(path, {"perk": program["perk"], "existing": "1",
                                                     "yearly_capacity": "4", "unit_price_fen": "1800"})
    assert status == 303
    row = await db.fetchrow("SELECT yearly_capacity, unit_price_fen FROM agreements WHERE perk_code = $1",
                            program["perk"])
    assert dict(row) == {"yearly_capacity": 4, "unit_price_fen": 1800}
    entries = await api.audit_entries(entity_type="agreement")
    assert entries[0]["actor"]["username"] == operator.username and entries[0]["after"]["yearly_capacity"] == 4

    # Validation beside the field, in the reader's language.
    status, text, _ = await operator.post(path, {"perk": program["perk"], "existing": "1",
                                                 "yearly_capacity": "-1", "unit_price_fen": "x"})
    assert status == 400
    assert field_error(text, "yearly_capacity") == "Must be at least 0"
    assert field_error(text, "unit_price_fen") == "Must be a whole number"

    # A new perk for the partner, with no cap.
    status, _, _ = await operator.post(path, {"perk": extra["code"], "yearly_capacity": "", "unit_price_fen": "900"})
    assert status == 303
    assert await db.fetchval("SELECT yearly_capacity IS NULL FROM agreements WHERE perk_code = $1", extra["code"])

    # Store, users, suspend and reactivate.
    status, _, _ = await operator.post(f"/console/partners/{merchant}/stores", {"name": "南门店", "address": "1 路"})
    assert status == 303
    status, text, _ = await operator.post(f"/console/partners/{merchant}/stores", {"name": "", "address": ""})
    assert status == 400 and field_error(text, "name")
    store = await db.fetchval("SELECT id::text FROM stores WHERE name = '南门店'")
    username = unique("cashier")
    status, _, _ = await operator.post(f"/console/partners/{merchant}/users", {
        "username": username, "password": PASSWORD, "role": "cashier", "store_id": store})
    assert status == 303
    assert await db.fetchval("SELECT store_id::text FROM users WHERE username = $1", username) == store
    status, text, _ = await operator.post(f"/console/partners/{merchant}/users", {
        "username": username, "password": PASSWORD, "role": "manager", "store_id": ""})
    assert status == 409 and field_error(text, "username") == "Already taken"
    status, _, _ = await operator.post(f"/console/partners/{merchant}/status", {"status": "suspended"})
    assert status == 303
    assert await db.fetchval("SELECT status FROM merchants WHERE id = $1", program["merchant"]) == "suspended"
    status, text, _ = await operator.get(f"/console/partners/{merchant}?done=suspended")
    assert 'data-status="suspended"' in text and 'id="reactivate"' in text
    status, _, _ = await operator.post(f"/console/partners/{merchant}/status", {"status": "active"})
    assert await db.fetchval("SELECT status FROM merchants WHERE id = $1", program["merchant"]) == "active"

    # A new partner, and a validation error on its form.
    status, _, response = await operator.post("/console/partners", {"name": "新商户", "category": "car_wash",
                                                                    "city": "", "contact_phone": ""})
    assert status == 303 and "/console/partners/" in response.headers["Location"]
    status, text, _ = await operator.post("/console/partners", {"name": "", "category": "", "contact_phone": "x"})
    assert status == 400 and field_error(text, "name") and field_error(text, "contact_phone")


PARTNER_FORMS = [
    ("/console/partners", {"name": "x", "category": "y"}),
    ("/console/partners/{merchant}/status", {"status": "suspended"}),
    ("/console/partners/{merchant}/agreements", {"perk": "{perk}", "yearly_capacity": "1", "unit_price_fen": "1"}),
    ("/console/partners/{merchant}/stores", {"name": "s"}),
    ("/console/partners/{merchant}/users", {"username": "u1", "password": PASSWORD, "role": "manager"}),
]


async def assert_forms_guarded(staff, client, db, forms: list[tuple[str, dict[str, str]]], page: str,
                               values: dict[str, str], writers: tuple[str, ...] = ("admin", "operator")) -> None:
    """Each form: refused to an auditor (403), refused without the CSRF token, refused with another session's
    token, refused without a session; and nothing changed by any of these."""
    auditor = await staff("auditor")
    writer = await staff(writers[0])
    other = await staff(writers[-1] if len(writers) > 1 else writers[0])
    before = await db.fetchval("SELECT count(*) FROM audit_log")
    await writer.get(page.format(**values))
    await other.get(page.format(**values))
    anonymous = Staff(client)
    try:
        for path, data in forms:
            path = path.format(**values)
            data = {name: value.format(**values) for name, value in data.items()}
            await auditor.get(page.format(**values))
            status, text, _ = await auditor.post(path, data)
            assert status == 403, (path, status)
            status, text, _ = await writer.post(path, data, csrf=False)
            assert status == 403 and 'data-code="csrf"' in text, (path, status)
            status, text, _ = await writer.post(path, {"csrf": other.csrf} | data, csrf=False)
            assert status == 403 and 'data-code="csrf"' in text, (path, status)
            status, _, response = await anonymous.post(path, data, csrf=False)
            assert status == 303 and response.headers["Location"] == "/console/login", path
    finally:
        await anonymous.close()
    assert await db.fetchval("SELECT count(*) FROM audit_log") == before


async def test_partner_forms_are_refused_to_auditors_and_forgeries(staff, client, api, db):
    program = await api.program()
    values = {"merchant": program["merchant"], "perk": program["perk"]}
    await assert_forms_guarded(staff, client, db, PARTNER_FORMS, "/console/partners/{merchant}", values)


# --- programme -------------------------------------------------------------------------------------------------

async def test_tiers_and_perks_added_renamed_reranked_with_conflicts_said_plainly(staff, db):
    admin = await staff("admin")
    status, _, _ = await admin.post("/console/programme/tiers", {"code": "gold", "name": "金卡", "rank": "20",
                                                                 "min_points": "1000"})
    assert status == 303
    status, text, _ = await admin.post("/console/programme/tiers", {"code": "gold", "name": "x", "rank": "21",
                                                                    "min_points": "0"})
    assert status == 409 and field_error(text, "code") == "Already taken"
    status, text, _ = await admin.post("/console/programme/tiers", {"code": "Gold!", "name": "", "rank": "a",
                                                                    "min_points": "-1"})
    assert status == 400
    assert field_error(text, "code") == "Lower-case letters, digits and _ only (at most 32)"
    assert field_error(text, "rank") == "Must be a whole number" and field_error(text, "min_points") == "Must be at least 0"
    await admin.post("/console/programme/tiers", {"code": "silver", "name": "银卡", "rank": "10", "min_points": "0"})
    status, text, _ = await admin.post("/console/programme/tiers/silver", {"name": "银卡", "rank": "20", "min_points": "0"})
    assert status == 409 and field_error(text, "rank") == "Already taken"
    status, _, _ = await admin.post("/console/programme/tiers/gold", {"name": "金卡 Plus", "rank": "30", "min_points": "2000"})
    assert status == 303
    row = await db.fetchrow("SELECT name, rank, min_points FROM tiers WHERE code = 'gold'")
    assert dict(row) == {"name": "金卡 Plus", "rank": 30, "min_points": 2000}

    status, _, _ = await admin.post("/console/programme/perks", {"code": "wash", "name": "洗车", "category": "car_wash",
                                                                 "voucher_ttl_seconds": "300"})
    assert status == 303
    status, text, _ = await admin.post("/console/programme/perks/wash", {"name": "洗车", "category": "car_wash",
                                                                          "voucher_ttl_seconds": "5", "birthday_only": "1"})
    assert status == 400 and field_error(text, "voucher_ttl_seconds") == "Must be at least 30"
    status, _, _ = await admin.post("/console/programme/perks/wash", {"name": "精致洗车", "category": "car_wash",
                                                                       "voucher_ttl_seconds": "600", "birthday_only": "1"})
    row = await db.fetchrow("SELECT name, voucher_ttl_seconds, birthday_only FROM perks WHERE code = 'wash'")
    assert dict(row) == {"name": "精致洗车", "voucher_ttl_seconds": 600, "birthday_only": True}
    actions = [entry["action"] for entry in await admin_audit(db)]
    assert {"tier.create", "tier.update", "perk.create", "perk.update"} <= set(actions)


async def admin_audit(db) -> list[dict[str, Any]]:
    return [dict(row) for row in await db.fetch("SELECT action, actor_username FROM audit_log ORDER BY id")]


async def test_the_matrix_grants_replaces_and_withdraws_in_one_form(staff, api, db):
    tier = await api.tier()
    wash, cut = await api.perk(), await api.perk()
    await api.entitle(tier["code"], wash["code"], 5, None)
    await api.entitle(tier["code"], cut["code"], None, 2)
    operator = await staff("operator")
    status, text, _ = await operator.get("/console/programme")
    assert status == 200
    q = lambda perk: f"yearly_quota.{tier['code']}.{perk}"  # noqa: E731
    c = lambda perk: f"monthly_cap.{tier['code']}.{perk}"  # noqa: E731
    assert f'name="{q(wash["code"])}" value="5"' in text and f'name="{q(cut["code"])}" value="*"' in text
    assert f'name="{c(cut["code"])}" value="2"' in text
    # Bad cells: nothing at all is saved, each problem beside its cell.
    form = {q(wash["code"]): "x", c(wash["code"]): "", q(cut["code"]): "3", c(cut["code"]): "0"}
    status, text, _ = await operator.post("/console/programme/matrix", form)
    assert status == 400
    assert field_error(text, q(wash["code"])) == "Must be a whole number"
    assert field_error(text, c(cut["code"])) == "Must be at least 1"
    # Wash becomes unlimited with a monthly cap; cut is withdrawn.
    form = {q(wash["code"]): "*", c(wash["code"]): "1", q(cut["code"]): "", c(cut["code"]): ""}
    status, _, _ = await operator.post("/console/programme/matrix", form)
    assert status == 303
    rows = await db.fetch("SELECT perk_code, yearly_quota, monthly_cap FROM entitlements WHERE tier_code = $1",
                          tier["code"])
    assert [dict(row) for row in rows] == [{"perk_code": wash["code"], "yearly_quota": None, "monthly_cap": 1}]
    actions = [row["action"] for row in await db.fetch("SELECT action FROM audit_log WHERE entity_type = 'entitlement' ORDER BY id")]
    assert actions[-2:] == ["entitlement.put", "entitlement.delete"] or sorted(actions[-2:]) == ["entitlement.delete", "entitlement.put"]


async def test_points_rules_are_set_in_the_console(staff, db):
    admin = await staff("admin")
    status, _, _ = await admin.post("/console/programme/rules", {"source": "deposit", "points_per_yuan": "1.5"})
    assert status == 303
    assert str(await db.fetchval("SELECT points_per_yuan FROM points_rules WHERE source = 'deposit'")) == "1.5000"
    status, text, _ = await admin.post("/console/programme/rules", {"source": "Bad", "points_per_yuan": "x"})
    assert status == 400 and field_error(text, "source") and field_error(text, "points_per_yuan")


PROGRAMME_FORMS = [
    ("/console/programme/tiers", {"code": "t1", "name": "x", "rank": "1", "min_points": "0"}),
    ("/console/programme/tiers/{tier}", {"name": "x", "rank": "5", "min_points": "0"}),
    ("/console/programme/perks", {"code": "p1", "name": "x", "category": "y", "voucher_ttl_seconds": "300"}),
    ("/console/programme/perks/{perk}", {"name": "x", "category": "y", "voucher_ttl_seconds": "300"}),
    ("/console/programme/matrix", {}),
    ("/console/programme/rules", {"source": "deposit", "points_per_yuan": "1"}),
]


async def test_programme_forms_are_refused_to_auditors_and_forgeries(staff, client, api, db):
    tier, perk = await api.tier(), await api.perk()
    values = {"tier": tier["code"], "perk": perk["code"]}
    await assert_forms_guarded(staff, client, db, PROGRAMME_FORMS, "/console/programme", values)


async def test_every_console_page_answers_each_staff_role(staff, api, clock):
    from datetime import datetime, timezone

    shop = await redeemed_program(api, clock, datetime(2026, 4, 15, 4, 0, tzinfo=timezone.utc))
    pages = ["/console/dashboard", "/console/partners", f"/console/partners/{shop['merchant']}", "/console/programme",
             "/console/clients", f"/console/clients/{shop['client_id']}", "/console/settlement?month=2026-04",
             f"/console/settlement/{shop['merchant']}/2026-04", "/console/redemptions", "/console/audit",
             "/console/imports", "/console/me"]
    for role in STAFF:
        for lang in ("zh-CN", "en"):
            visitor = await staff(role, lang=lang)
            for path in pages:
                status, text, _ = await visitor.get(path)
                assert status == 200, (role, path, status)
                assert f'<html lang="{lang}">' in text
                # A key missing from a catalogue would show itself.
                assert not re.search(r"\b(console|role|status|problem)\.[a-z_]+", text.split("<main", 1)[1]), path
    status, _, _ = await visitor.get("/console/partners/not-an-id")
    assert status == 404


def test_every_console_string_is_in_both_catalogues():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "merchant_portal"
    zh = json.loads((root / "translations/zh_CN.json").read_text(encoding="utf-8"))
    en = json.loads((root / "translations/en.json").read_text(encoding="utf-8"))
    assert set(zh) == set(en)
    used: set[str] = set()
    for path in [*(root / "templates/console").glob("*.html"), *(root / "console").glob("*.py")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+(?:\.[a-z_]+)+)["']""", path.read_text(encoding="utf-8")))
    # Keys built from a value (``t("role." + role)``): their prefixes are left out, every value put in.
    used = {key for key in used if not key.endswith(("_", "."))}
    from merchant_portal.console.programme_views import MATRIX_COLUMNS

    used |= {f"role.{role}" for role in ("admin", "operator", "auditor", "manager", "cashier")}
    used |= {f"status.{s}" for s in ("active", "suspended", "blocked", "open", "finalized", "redeemed", "voided")}
    used |= {f"console.me.can_{role}" for role in STAFF}
    used |= {f"console.clients.reason_{r}" for r in ("evaluation", "override", "manual", "import")}
    used |= {f"console.settlement.kind_{k}" for k in ("redemption", "adjustment")}
    used |= {f"console.anomaly.{k}" for k in ("client_concentration", "repeated_same_day", "capacity_early")}
    used |= {column.label for column in MATRIX_COLUMNS}
    used |= {f"console.nav.{k}" for k in ("dashboard", "partners", "programme", "clients", "settlement",
                                          "redemptions", "audit", "imports", "api")}
    assert used <= set(zh), sorted(used - set(zh))
    for key in zh:
        if key.startswith(("console.", "problem.")):
            assert re.findall(r"{\w+}", zh[key]) == re.findall(r"{\w+}", en[key]), key
