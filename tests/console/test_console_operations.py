"""The staff console without a browser, continued: clients, settlement, redemptions, the audit log and imports —
each form for each role, auditors' POSTs and forgeries refused, validation beside the fields, audited changes."""

from __future__ import annotations

import re

from tests.console.test_console_pages import assert_forms_guarded, field_error, redeemed_program, staff  # noqa: F401


# --- clients ---------------------------------------------------------------------------------------------------

async def test_clients_are_found_by_reference_phone_tail_and_name_and_masked_for_auditors(staff, api):
    tier = await api.tier()
    found = await api.new_client(tier=tier["code"], name="罗小升", phone="13800004321")
    other = await api.new_client(name="张三", phone="13900001111")
    operator, auditor = await staff("operator"), await staff("auditor")
    for query in (found["external_ref"], "4321", "小升"):
        status, text, _ = await operator.get(f"/console/clients?q={query}")
        assert status == 200 and found["id"] in text and other["id"] not in text, query
    status, text, _ = await operator.get(f"/console/clients/{found['id']}")
    assert status == 200 and '<span id="client-name">罗小升</span>' in text and "13800004321" in text
    assert 'id="client-actions"' in text
    status, text, _ = await auditor.get(f"/console/clients/{found['id']}")
    assert status == 200 and '<span id="client-name">罗*升</span>' in text and "*******4321" in text
    assert "罗小升" not in text and "13800004321" not in text and 'id="client-actions"' not in text
    status, text, _ = await auditor.get("/console/clients?q=4321")
    assert "罗*升" in text and "罗小升" not in text


async def test_client_override_block_and_wallet_link(staff, api, db, clock):
    from datetime import datetime, timezone

    clock.set(datetime(2026, 5, 10, 4, 0, tzinfo=timezone.utc))
    gold, silver = await api.tier(), await api.tier()
    member = await api.new_client(tier=silver["code"])
    admin = await staff("admin")
    path = f"/console/clients/{member['id']}"
    status, _, _ = await admin.post(f"{path}/override", {"tier": gold["code"], "until": "2026-06-30"})
    assert status == 303
    row = await db.fetchrow("SELECT tier_code, tier_override_until FROM clients WHERE id = $1", member["id"])
    assert row["tier_code"] == gold["code"]
    assert row["tier_override_until"] == datetime(2026, 6, 30, 16, 0, tzinfo=timezone.utc)  # midnight in Shanghai
    status, text, _ = await admin.post(f"{path}/override", {"tier": gold["code"], "until": "2026-01-01"})
    assert status == 400 and field_error(text, "until") == "Must be in the future"
    status, _, _ = await admin.post(f"{path}/override", {"lift": "1"})
    assert await db.fetchval("SELECT tier_override_until FROM clients WHERE id = $1", member["id"]) is None
    status, _, _ = await admin.post(f"{path}/status", {"status": "blocked"})
    assert status == 303 and await db.fetchval("SELECT status FROM clients WHERE id = $1", member["id"]) == "blocked"
    status, text, _ = await admin.get(f"{path}?done=blocked")
    assert 'data-status="blocked"' in text and 'id="unblock"' in text and 'id="tier-history"' in text
    await admin.post(f"{path}/status", {"status": "active"})
    status, text, _ = await admin.post(f"{path}/wallet-link", {})
    assert status == 200 and 'id="wallet-link-url"' in text and "/wallet/open#t=" in text
    actions = {row["action"] for row in await db.fetch("SELECT action FROM audit_log WHERE entity_id = $1", member["id"])}
    assert {"client.tier_override", "client.update", "wallet_link.create"} <= actions


CLIENT_FORMS = [
    ("/console/clients/{client}/override", {"tier": "", "until": "2099-01-01"}),
    ("/console/clients/{client}/status", {"status": "blocked"}),
    ("/console/clients/{client}/wallet-link", {}),
]


async def test_client_forms_are_refused_to_auditors_and_forgeries(staff, client, api, db):
    member = await api.new_client()
    await assert_forms_guarded(staff, client, db, CLIENT_FORMS, "/console/clients/{client}", {"client": member["id"]})


# --- settlement and redemptions --------------------------------------------------------------------------------

async def test_month_statements_one_statement_csv_and_finalize(staff, api, db, clock):
    from datetime import datetime, timezone

    shop = await redeemed_program(api, clock, datetime(2026, 4, 15, 4, 0, tzinfo=timezone.utc))
    admin, operator = await staff("admin"), await staff("operator")
    status, text, _ = await operator.get("/console/settlement?month=2026-04")
    assert status == 200 and f'data-merchant="{shop["merchant"]}"' in text and 'id="month-total">15.00<' in text
    path = f"/console/settlement/{shop['merchant']}/2026-04"
    status, text, _ = await operator.get(path)
    assert status == 200 and 'data-status="open"' in text and 'id="finalize-form"' not in text
    status, text, _ = await operator.post(f"{path}/finalize", {"confirm": "1"})
    assert status == 403  # finalizing is for administrators, as in the API
    status, text, _ = await admin.get(path)
    assert 'id="finalize-form"' in text and 'not ended' in text
    status, text, _ = await admin.post(f"{path}/finalize", {"confirm": "1"})
    assert status == 409 and 'id="form-error"' in text  # April has not ended: said plainly
    clock.set(datetime(2026, 5, 2, 4, 0, tzinfo=timezone.utc))
    admin, operator = await staff("admin"), await staff("operator")  # the sessions of April have ended
    await admin.get(path)
    status, text, _ = await admin.post(f"{path}/finalize", {})
    assert status == 400 and field_error(text, "confirm") == "Tick the box to confirm first"
    status, _, response = await admin.post(f"{path}/finalize", {"confirm": "1"})
    assert status == 303 and response.headers["Location"].endswith("done=finalized")
    status, text, _ = await admin.get(response.headers["Location"])
    assert 'data-status="finalized"' in text and 'id="finalize-form"' not in text
    status, text, response = await operator.get(f"{path}/csv")
    assert status == 200 and response.headers["Content-Type"].startswith("text/csv")
    async with operator.session.get(operator.url(f"{path}/csv")) as raw:
        body = await raw.read()
    assert body.startswith("\ufeff".encode()) and b"\r\ntotal" not in body and b",total," in body
    status, api_csv = await api.call("GET", f"/api/v1/merchants/{shop['merchant']}/statements/2026-04?format=csv",
                                     await api.staff("auditor"))
    assert body.decode("utf-8-sig") == api_csv.lstrip("\ufeff")
    entries = await api.audit_entries(entity_type="statement")
    assert entries[0]["action"] == "statement.finalize" and entries[0]["actor"]["username"] == admin.username


async def test_redemptions_filter_and_void_gives_back(staff, api, db, clock):
    from datetime import datetime, timezone

    # 23:00 on 15 April and 01:00 on 16 April in Shanghai: days are the bank's.
    shop = await redeemed_program(api, clock, datetime(2026, 4, 15, 15, 0, tzinfo=timezone.utc))
    other = await redeemed_program(api, clock, datetime(2026, 4, 15, 17, 0, tzinfo=timezone.utc))
    operator = await staff("operator")
    status, text, _ = await operator.get(f"/console/redemptions?merchant={shop['merchant']}")
    assert shop["redemption"] in text and other["redemption"] not in text
    status, text, _ = await operator.get("/console/redemptions?day=2026-04-16")
    assert other["redemption"] in text and shop["redemption"] not in text
    status, text, _ = await operator.get(f"/console/redemptions?perk={other['perk']}")
    assert other["redemption"] in text and shop["redemption"] not in text
    status, _, _ = await operator.get("/console/redemptions?day=yesterday")
    assert status == 400
    path = f"/console/redemptions/{shop['redemption']}/void"
    status, text, _ = await operator.post(path, {"reason": "", "confirm": ""})
    assert status == 400 and field_error(text, "reason") and field_error(text, "confirm")
    status, _, response = await operator.post(path, {"reason": "刷错了", "confirm": "1"})
    assert status == 303
    row = await db.fetchrow("SELECT status, void_reason FROM redemptions WHERE id = $1", shop["redemption"])
    assert dict(row) == {"status": "voided", "void_reason": "刷错了"}
    assert await db.fetchval("SELECT used FROM merchant_yearly_usage WHERE merchant_id = $1", shop["merchant"]) == 0
    assert await api.counter_mismatches() == []
    status, text, _ = await operator.post(path, {"reason": "again", "confirm": "1"})
    assert status == 409 and "already voided" in text


async def test_settlement_and_void_forms_are_refused_to_auditors_and_forgeries(staff, client, api, db, clock):
    from datetime import datetime, timezone

    shop = await redeemed_program(api, clock, datetime(2026, 4, 15, 4, 0, tzinfo=timezone.utc))
    clock.set(datetime(2026, 5, 2, 4, 0, tzinfo=timezone.utc))
    values = {"merchant": shop["merchant"], "redemption": shop["redemption"]}
    await assert_forms_guarded(staff, client, db, [("/console/redemptions/{redemption}/void",
                                                    {"reason": "x", "confirm": "1"})], "/console/redemptions", values)
    await assert_forms_guarded(staff, client, db, [("/console/settlement/{merchant}/2026-04/finalize",
                                                    {"confirm": "1"})], "/console/settlement/{merchant}/2026-04",
                               values, writers=("admin",))


# --- audit log and imports -------------------------------------------------------------------------------------

async def test_audit_log_filters_and_shows_a_readable_diff(staff, api):
    program = await api.program(yearly_capacity=10)
    operator = await staff("operator")
    await operator.post(f"/console/partners/{program['merchant']}/agreements",
                        {"perk": program["perk"], "existing": "1", "yearly_capacity": "7", "unit_price_fen": "1500"})
    auditor = await staff("auditor", lang="zh-CN")
    status, text, _ = await auditor.get(f"/console/audit?entity_type=agreement&actor={operator.username}")
    assert status == 200 and text.count('class="card audit-entry"') == 1
    assert re.search(r'data-field="yearly_capacity" class="changed"><td>yearly_capacity</td>\s*<td><del>10</del></td>\s*'
                     r'<td><ins>7</ins></td>', text)
    assert re.search(r'data-field="unit_price_fen"><td>unit_price_fen</td>\s*<td>1500</td>', text)
    status, text, _ = await auditor.get("/console/audit?entity_type=agreement&from=2000-01-01&to=2000-01-02")
    assert 'class="card audit-entry"' not in text
    status, _, _ = await auditor.get("/console/audit?from=someday")
    assert status == 400


async def test_imports_apply_all_or_name_every_bad_line(staff, api, db):
    tier = await api.tier()
    operator = await staff("operator")
    import aiohttp

    async def upload(path: str, content: bytes):
        form = aiohttp.FormData()
        form.add_field("csrf", operator.csrf)
        form.add_field("file", content, filename="x.csv", content_type="text/csv")
        async with operator.session.post(operator.url(path), data=form, allow_redirects=False) as response:
            return response.status, await response.text()

    good = f"external_ref,name,phone,tier\nK1,王五,13800009999,{tier['code']}\nK2,赵六,,\n".encode()
    status, text = await upload("/console/imports/clients", "\ufeff".encode() + good)
    assert status == 200 and 'id="import-result"' in text
    assert await db.fetchval("SELECT count(*) FROM clients WHERE external_ref IN ('K1', 'K2')") == 2
    bad = "external_ref,name,birthday,tier\nK3,孙七,,\nK4,,2001-02-30,nosuch\n".encode()
    status, text = await upload("/console/imports/clients", bad)
    assert status == 400 and 'id="import-problems"' in text
    assert 'data-line="3" data-field="name"' in text and 'data-line="3" data-field="birthday"' in text
    assert await db.fetchval("SELECT count(*) FROM clients WHERE external_ref = 'K3'") == 0
    await operator.post("/console/programme/rules", {"source": "deposit", "points_per_yuan": "1"})
    await operator.get("/console/imports")
    events_csv = b"event_ref,client_external_ref,source,amount_fen,occurred_at\nE1,K1,deposit,10000,2026-01-05T10:00:00+08:00\n"
    status, text = await upload("/console/imports/events", events_csv)
    assert status == 200 and 'id="import-result" data-kind="events"' in text
    status, text = await upload("/console/imports/events", events_csv + b"E2,NOPE,deposit,1,2026-01-05T10:00:00+08:00\n")
    assert status == 400 and 'data-line="3"' in text


async def test_import_forms_are_refused_to_auditors_and_forgeries(staff, client, db):
    forms = [("/console/imports/events", {"file": "x"}), ("/console/imports/clients", {"file": "x"})]
    await assert_forms_guarded(staff, client, db, forms, "/console/imports", {})
