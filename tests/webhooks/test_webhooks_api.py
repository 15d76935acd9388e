"""The webhook subscriptions API: validation, roles, audit, and the secret shown once."""

from __future__ import annotations

import pytest

from tests.webhook_support import fast_config

WEBHOOKS = "/api/v1/webhooks"
URL = "https://hooks.example.test/perks"


@pytest.fixture
def config(config):
    return fast_config(config, webhook_enabled="0")


async def test_create_read_update_delete_with_audit(api, db):
    admin = await api.staff("admin")
    hook = await api.ok("POST", WEBHOOKS, admin, 201, json={
        "url": URL, "event_types": ["redemption.created", "redemption.created", "grant.created"],
        "description": "SMS notices"})
    secret = hook.pop("secret")
    assert hook["event_types"] == ["redemption.created", "grant.created"]
    assert hook["status"] == "active" and hook["description"] == "SMS notices"
    got = await api.ok("GET", f"{WEBHOOKS}/{hook['id']}", admin)
    assert got == hook and "secret" not in got
    listed = await api.ok("GET", WEBHOOKS, admin)
    assert listed["items"] == [hook] and listed["next_cursor"] is None
    stored = await db.fetchval("SELECT secret_encrypted FROM webhooks WHERE id = $1::uuid", hook["id"])
    assert secret.encode() not in stored

    changed = await api.ok("PATCH", f"{WEBHOOKS}/{hook['id']}", admin, json={
        "status": "paused", "event_types": ["statement.finalized"], "url": "http://127.0.0.1:9/x"})
    assert changed["status"] == "paused" and changed["event_types"] == ["statement.finalized"]
    assert changed["url"] == "http://127.0.0.1:9/x"
    assert await api.ok("DELETE", f"{WEBHOOKS}/{hook['id']}", admin, 204) == ""
    status, _ = await api.call("GET", f"{WEBHOOKS}/{hook['id']}", admin)
    assert status == 404
    entries = await api.audit_entries(entity_type="webhook", entity_id=hook["id"])
    assert [entry["action"] for entry in entries] == ["webhook.delete", "webhook.update", "webhook.create"]
    assert entries[1]["before"]["status"] == "active" and entries[1]["after"]["status"] == "paused"
    assert secret not in str(entries)


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.test/x", "event_types": ["grant.created"]}, "url"),
    ({"url": "https://user:pw@example.test/x", "event_types": ["grant.created"]}, "url"),
    ({"url": "/relative", "event_types": ["grant.created"]}, "url"),
    ({"url": URL, "event_types": ["grant.made"]}, "event_types.0"),
    ({"url": URL, "event_types": []}, "event_types"),
    ({"url": URL, "event_types": ["grant.created"], "secret": "mine"}, "secret"),
    ({"url": URL, "event_types": ["grant.created"], "description": ""}, "description"),
])
async def test_create_validation(api, body, field):
    status, answer = await api.call("POST", WEBHOOKS, await api.staff("admin"), json=body)
    assert status == 400, answer
    assert field in answer["error"]["details"]["fields"]


async def test_patch_validation_and_unknown_ids(api):
    admin = await api.staff("admin")
    hook = await api.ok("POST", WEBHOOKS, admin, 201, json={"url": URL, "event_types": ["grant.created"]})
    status, body = await api.call("PATCH", f"{WEBHOOKS}/{hook['id']}", admin, json={"status": "deleted"})
    assert status == 400 and "status" in body["error"]["details"]["fields"]
    status, body = await api.call("PATCH", f"{WEBHOOKS}/{hook['id']}", admin, json={"url": None})
    assert status == 400 and "url" in body["error"]["details"]["fields"]
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path in [("GET", f"{WEBHOOKS}/{missing}"), ("DELETE", f"{WEBHOOKS}/{missing}"),
                         ("POST", f"{WEBHOOKS}/{missing}/rotate-secret"), ("GET", f"{WEBHOOKS}/nope/deliveries"),
                         ("POST", f"{WEBHOOKS}/{hook['id']}/deliveries/{missing}/retry")]:
        status, _ = await api.call(method, path, admin)
        assert status == 404, (method, path)


@pytest.mark.parametrize("role", ["operator", "auditor"])
async def test_only_admins_manage_webhooks(api, role):
    token = await api.staff(role)
    hook = await api.ok("POST", WEBHOOKS, await api.staff("admin"), 201,
                        json={"url": URL, "event_types": ["grant.created"]})
    for method, path, body in [("POST", WEBHOOKS, {"url": URL, "event_types": ["grant.created"]}),
                               ("GET", WEBHOOKS, None), ("GET", f"{WEBHOOKS}/{hook['id']}", None),
                               ("PATCH", f"{WEBHOOKS}/{hook['id']}", {"status": "paused"}),
                               ("DELETE", f"{WEBHOOKS}/{hook['id']}", None),
                               ("POST", f"{WEBHOOKS}/{hook['id']}/rotate-secret", None),
                               ("GET", f"{WEBHOOKS}/{hook['id']}/deliveries", None)]:
        status, answer = await api.call(method, path, token, json=body)
        assert status == 403 and answer["error"]["code"] == "forbidden", (method, path)
    status, _ = await api.call("GET", WEBHOOKS)
    assert status == 401
