"""Grants API: given, listed and revoked by bank staff, audited, and reported as grant.created events."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.webhook_support import eventually, fast_config

# 2026-06-30 16:30 UTC is 2026-07-01 00:30 in Shanghai: the bank's date is already July 1st.
NOW = datetime(2026, 6, 30, 16, 30, tzinfo=timezone.utc)


@pytest.fixture
def config(config):
    return fast_config(config, webhook_enabled="0")


@pytest.fixture
async def setup(api, clock):
    clock.set(NOW)
    client = await api.new_client()
    perk = await api.perk()
    return client, perk["code"]


def body(perk, **fields):
    return {"perk": perk, "quantity": 2, "expires_on": "2026-07-31", "reason": "Thanks for the suggestion"} | fields


async def test_give_list_revoke_with_audit_and_event(api, db, setup, clock):
    client, perk = setup
    operator = await api.staff("operator")
    grant = await api.ok("POST", f"/api/v1/clients/{client['id']}/grants", operator, 201, json=body(perk))
    assert grant | {"id": None, "created_at": None} == {
        "id": None, "client_id": client["id"], "perk": perk, "quantity": 2, "used": 0, "remaining": 2,
        "expires_on": "2026-07-31", "reason": "Thanks for the suggestion", "status": "active",
        "created_at": None, "revoked_at": None, "revoke_reason": None,
    }
    clock.advance(seconds=1)
    today = await api.ok("POST", f"/api/v1/clients/{client['id']}/grants", operator, 201,
                         json=body(perk, expires_on="2026-07-01", quantity=1))
    listed = await api.ok("GET", f"/api/v1/clients/{client['id']}/grants", await api.staff("auditor"))
    assert [item["id"] for item in listed["items"]] == [grant["id"], today["id"]]

    revoked = await api.ok("POST", f"/api/v1/grants/{grant['id']}/revoke", await api.staff("admin"),
                           json={"reason": "given by mistake"})
    assert revoked["status"] == "revoked" and revoked["revoke_reason"] == "given by mistake"
    assert revoked["revoked_at"].startswith("2026-06-30T16:30:01")
    status, answer = await api.call("POST", f"/api/v1/grants/{grant['id']}/revoke", operator,
                                    json={"reason": "again"})
    assert status == 409 and answer["error"]["code"] == "conflict"

    entries = await api.audit_entries(entity_type="grant", entity_id=grant["id"])
    assert [entry["action"] for entry in entries] == ["grant.revoke", "grant.create"]
    assert entries[0]["before"]["status"] == "active" and entries[0]["after"]["status"] == "revoked"
    rows = await db.fetch("SELECT type, data, occurred_at FROM events ORDER BY id")
    assert [row["type"] for row in rows] == ["grant.created", "grant.created"]
    assert rows[0]["data"] == {"grant_id": grant["id"], "client_id": client["id"], "perk": perk, "quantity": 2,
                               "expires_on": "2026-07-31"}
    assert rows[0]["occurred_at"] == NOW


@pytest.mark.parametrize("fields, field", [
    ({"quantity": 0}, "quantity"), ({"quantity": "2"}, "quantity"), ({"expires_on": "2026-06-30"}, "expires_on"),
    ({"expires_on": "30/07/2026"}, "expires_on"), ({"reason": ""}, "reason"), ({"reason": "x" * 501}, "reason"),
    ({"perk": "no_such_perk"}, "perk"), ({"perk": "Bad-Code"}, "perk"), ({"extra": 1}, "extra"),
])
async def test_validation_names_the_field(api, db, setup, fields, field):
    client, perk = setup
    status, answer = await api.call("POST", f"/api/v1/clients/{client['id']}/grants", await api.staff("operator"),
                                    json=body(perk) | fields)
    assert status == 400 and field in answer["error"]["details"]["fields"], answer
    assert await db.fetchval("SELECT count(*) FROM grants") == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_unknown_client_or_grant_is_404(api, setup):
    _, perk = setup
    operator = await api.staff("operator")
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path, payload in [("POST", f"/api/v1/clients/{missing}/grants", body(perk)),
                                  ("GET", f"/api/v1/clients/{missing}/grants", None),
                                  ("POST", f"/api/v1/grants/{missing}/revoke", {"reason": "x"}),
                                  ("POST", "/api/v1/grants/not-an-id/revoke", {"reason": "x"})]:
        status, _ = await api.call(method, path, operator, json=payload)
        assert status == 404, path


async def test_roles(api, setup):
    client, perk = setup
    grant = await api.ok("POST", f"/api/v1/clients/{client['id']}/grants", await api.staff("admin"), 201,
                         json=body(perk))
    merchant = await api.merchant()
    _, manager = await api.merchant_user(merchant["id"], "manager")
    client_token = await api.client_session(client["id"])
    for token in (await api.staff("auditor"), manager, client_token):
        status, _ = await api.call("POST", f"/api/v1/clients/{client['id']}/grants", token, json=body(perk))
        assert status == 403
        status, _ = await api.call("POST", f"/api/v1/grants/{grant['id']}/revoke", token, json={"reason": "x"})
        assert status == 403
    for token in (manager, client_token):
        status, _ = await api.call("GET", f"/api/v1/clients/{client['id']}/grants", token)
        assert status == 403


async def test_a_grant_created_event_reaches_get_events(api, setup):
    client, perk = setup
    grant = await api.ok("POST", f"/api/v1/clients/{client['id']}/grants", await api.staff("operator"), 201,
                         json=body(perk))

    async def listed():
        items = (await api.ok("GET", "/api/v1/events", await api.staff("admin"),
                              params={"types": "grant.created"}))["items"]
        return [item["data"]["grant_id"] for item in items] == [grant["id"]]

    await eventually(listed)
