"""Accounts an operator controls: disabling and enabling staff and merchant users, new passwords, role changes,
the refusals around them, the audit entries, and the sessions each change ends."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import PASSWORD, unique

STAFF = "/api/v1/staff"
TOKEN = "/api/v1/auth/token"
NEW_PASSWORD = "a different horse staple"


def _code(body: Any) -> str:
    return body["error"]["code"]


async def _staff_user(api, role: str = "operator") -> dict[str, Any]:
    body = {"username": unique(role), "password": PASSWORD, "role": role}
    return await api.ok("POST", STAFF, await api.staff("admin"), 201, json=body)


async def _login(api, username: str, password: str = PASSWORD) -> tuple[int, Any]:
    return await api.call("POST", TOKEN, json={"username": username, "password": password})


@pytest.fixture
async def shop(api) -> dict[str, Any]:
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    other_store = await api.store(merchant["id"])
    manager, manager_token = await api.merchant_user(merchant["id"], "manager")
    cashier, cashier_token = await api.merchant_user(merchant["id"], "cashier", store["id"])
    return {
        "merchant": merchant["id"], "store": store["id"], "other_store": other_store["id"],
        "manager": manager, "manager_token": manager_token, "cashier": cashier, "cashier_token": cashier_token,
    }


def _user_path(shop: dict[str, Any], user: dict[str, Any]) -> str:
    return f"/api/v1/merchants/{shop['merchant']}/users/{user['id']}"


# ---- staff -----------------------------------------------------------------------------------------------------

async def test_an_admin_disables_a_staff_user_whose_sessions_and_login_stop_at_once(api):
    user = await _staff_user(api)
    token = await api.login(user["username"])
    assert (await api.call("GET", "/api/v1/clients", token))[0] == 200
    admin = await api.staff("admin")
    changed = await api.ok("PATCH", f"{STAFF}/{user['id']}", admin, json={"status": "disabled"})
    assert changed == user | {"status": "disabled"}
    status, body = await api.call("GET", "/api/v1/clients", token)
    assert (status, _code(body)) == (401, "unauthorized")
    status, body = await _login(api, user["username"])
    assert (status, _code(body)) == (401, "invalid_credentials")
    # Nothing revealed: a wrong password for the disabled user looks the same, and the message is the same.
    wrong = await _login(api, user["username"], "not the password")
    assert wrong == (status, body)

    await api.ok("PATCH", f"{STAFF}/{user['id']}", admin, json={"status": "active"})
    fresh = await api.login(user["username"])
    assert (await api.call("GET", "/api/v1/clients", fresh))[0] == 200
    # Enabling again does not revive the sessions that the disabling ended.
    assert (await api.call("GET", "/api/v1/clients", token))[0] == 401


async def test_a_disabled_users_right_password_counts_as_a_failure(api):
    user = await _staff_user(api)
    await api.ok("PATCH", f"{STAFF}/{user['id']}", await api.staff("admin"), json={"status": "disabled"})
    for _ in range(5):
        assert (await _login(api, user["username"]))[0] == 401
    assert (await _login(api, user["username"]))[0] == 429


async def test_a_new_password_ends_older_sessions_and_the_audit_never_holds_it(api, db):
    user = await _staff_user(api, "auditor")
    token = await api.login(user["username"])
    admin = await api.staff("admin")
    changed = await api.ok("PATCH", f"{STAFF}/{user['id']}", admin, json={"password": NEW_PASSWORD})
    assert changed == user
    assert (await api.call("GET", "/api/v1/audit", token))[0] == 401
    assert (await _login(api, user["username"]))[0] == 401
    assert (await api.call("GET", "/api/v1/audit", await api.login(user["username"], NEW_PASSWORD)))[0] == 200
    entries = await api.audit_entries(entity_type="user", entity_id=user["id"])
    assert entries[0]["action"] == "user.update" and entries[0]["actor"]["role"] == "admin"
    assert entries[0]["after"]["password_changed"] is True and entries[0]["after"]["sessions_revoked"] is True
    rows = await db.fetch("SELECT before::text, after::text FROM audit_log WHERE entity_id = $1", user["id"])
    stored_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::text::uuid", user["id"])
    for row in rows:
        for text in (row["before"] or "", row["after"] or ""):
            assert NEW_PASSWORD not in text and PASSWORD not in text and stored_hash not in text
            assert "password_hash" not in text and "argon2" not in text


async def test_a_role_change_ends_the_sessions_that_carry_the_old_role(api):
    user = await _staff_user(api, "operator")
    token = await api.login(user["username"])
    admin = await api.staff("admin")
    changed = await api.ok("PATCH", f"{STAFF}/{user['id']}", admin, json={"role": "auditor"})
    assert changed["role"] == "auditor"
    status, body = await api.call("POST", "/api/v1/clients", token, json={"external_ref": unique("C"), "name": "A B"})
    assert (status, _code(body)) == (401, "unauthorized")
    fresh = await api.login(user["username"])
    status, body = await api.call("POST", "/api/v1/clients", fresh, json={"external_ref": unique("C"), "name": "A B"})
    assert (status, _code(body)) == (403, "forbidden")
    entries = await api.audit_entries(entity_type="user", entity_id=user["id"])
    assert entries[0]["before"]["role"] == "operator" and entries[0]["after"]["role"] == "auditor"


async def test_a_status_that_does_not_change_is_no_change(api):
    user = await _staff_user(api)
    token = await api.login(user["username"])
    same = await api.ok("PATCH", f"{STAFF}/{user['id']}", await api.staff("admin"), json={"status": "active"})
    assert same == user
    assert (await api.call("GET", "/api/v1/clients", token))[0] == 200
    assert not [e for e in await api.audit_entries(entity_type="user", entity_id=user["id"]) if e["action"] == "user.update"]


@pytest.mark.parametrize(
    "data, field",
    [
        ({"status": "blocked"}, "status"),
        ({"role": "manager"}, "role"),
        ({"role": "cashier"}, "role"),
        ({"role": "root"}, "role"),
        ({"password": "short"}, "password"),
        ({"password": "password123"}, "password"),
        ({"username": "renamed"}, "username"),
    ],
)
async def test_bad_staff_changes_are_400_naming_the_field(api, data, field):
    user = await _staff_user(api)
    status, body = await api.call("PATCH", f"{STAFF}/{user['id']}", await api.staff("admin"), json=data)
    assert (status, _code(body)) == (400, "bad_request") and field in body["error"]["details"]["fields"]


async def test_an_admin_cannot_disable_or_demote_themselves(api, db):
    admin = await api.staff("admin")
    admin_id = await db.fetchval("SELECT id::text FROM users WHERE role = 'admin'")
    for data, field in (({"status": "disabled"}, "status"), ({"role": "operator"}, "role")):
        status, body = await api.call("PATCH", f"{STAFF}/{admin_id}", admin, json=data)
        assert (status, body["error"]["details"]["fields"].keys()) == (400, {field})
    assert (await api.call("GET", "/api/v1/audit", admin))[0] == 200


async def test_only_an_admin_changes_staff_and_merchant_users_are_not_staff(api, shop):
    user = await _staff_user(api)
    for role in ("operator", "auditor"):
        status, body = await api.call("PATCH", f"{STAFF}/{user['id']}", await api.staff(role), json={"status": "disabled"})
        assert (status, _code(body)) == (403, "forbidden")
    for token in (shop["manager_token"], shop["cashier_token"]):
        assert (await api.call("PATCH", f"{STAFF}/{user['id']}", token, json={"status": "disabled"}))[0] == 403
    admin = await api.staff("admin")
    for missing in (shop["manager"]["id"], "00000000-0000-0000-0000-000000000000", "nope"):
        status, body = await api.call("PATCH", f"{STAFF}/{missing}", admin, json={"status": "disabled"})
        assert (status, _code(body)) == (404, "not_found")


async def test_listing_and_reading_staff(api, shop):
    user = await _staff_user(api, "auditor")
    for role in ("admin", "auditor"):
        token = await api.staff(role)
        assert await api.ok("GET", f"{STAFF}/{user['id']}", token) == user
        listed = await api.ok("GET", STAFF, token, params={"limit": "500"})
        assert user in listed["items"] and all(item["role"] in ("admin", "operator", "auditor") for item in listed["items"])
    first = await api.ok("GET", STAFF, await api.staff("admin"), params={"limit": "1"})
    assert len(first["items"]) == 1 and first["next_cursor"]
    rest = await api.ok("GET", STAFF, await api.staff("admin"), params={"cursor": first["next_cursor"]})
    assert first["items"][0] not in rest["items"]
    assert (await api.call("GET", STAFF, await api.staff("operator")))[0] == 403
    assert (await api.call("GET", STAFF, shop["manager_token"]))[0] == 403
    assert (await api.call("GET", f"{STAFF}/{shop['manager']['id']}", await api.staff("admin")))[0] == 404


# ---- merchant users --------------------------------------------------------------------------------------------

async def test_bank_staff_and_the_manager_disable_a_cashier(api, shop):
    for actor in (await api.staff("admin"), await api.staff("operator"), shop["manager_token"]):
        user, token = await api.merchant_user(shop["merchant"], "cashier", shop["store"])
        changed = await api.ok("PATCH", _user_path(shop, user), actor, json={"status": "disabled"})
        assert changed == user | {"status": "disabled"}
        status, body = await api.call("GET", "/api/v1/merchant/redemptions", token)
        assert (status, _code(body)) == (401, "unauthorized")
        assert (await _login(api, user["username"]))[0] == 401


async def test_a_manager_moves_a_cashier_to_another_store_and_promotes_one(api, shop):
    manager = shop["manager_token"]
    cashier_token = shop["cashier_token"]
    moved = await api.ok("PATCH", _user_path(shop, shop["cashier"]), manager, json={"store_id": shop["other_store"]})
    assert moved["store_id"] == shop["other_store"]
    assert (await api.call("GET", "/api/v1/merchant/redemptions", cashier_token))[0] == 401
    login = await api.ok("POST", TOKEN, None, json={"username": shop["cashier"]["username"], "password": PASSWORD})
    assert login["store_id"] == shop["other_store"]

    promoted = await api.ok("PATCH", _user_path(shop, shop["cashier"]), manager, json={"role": "manager"})
    assert (promoted["role"], promoted["store_id"]) == ("manager", None)
    demoted = await api.ok(
        "PATCH", _user_path(shop, shop["cashier"]), manager, json={"role": "cashier", "store_id": shop["store"]}
    )
    assert (demoted["role"], demoted["store_id"]) == ("cashier", shop["store"])
    entries = await api.audit_entries(entity_type="user", entity_id=shop["cashier"]["id"])
    assert [e["action"] for e in entries[:3]] == ["user.update"] * 3 and entries[0]["actor"]["role"] == "manager"


async def test_merchant_user_change_refusals(api, shop):
    manager = shop["manager_token"]
    other = await api.merchant()
    other_store = await api.store(other["id"])
    cases = [
        ({"role": "admin"}, "role"),
        ({"role": "operator"}, "role"),
        ({"store_id": other_store["id"]}, "store_id"),
        ({"store_id": None}, "store_id"),
        ({"store_id": "not-a-uuid"}, "store_id"),
        ({"status": "blocked"}, "status"),
        ({"password": "1234567"}, "password"),
    ]
    for data, field in cases:
        status, body = await api.call("PATCH", _user_path(shop, shop["cashier"]), manager, json=data)
        assert (status, _code(body), list(body["error"]["details"]["fields"])) == (400, "bad_request", [field]), data
    # A manager has no store of its own: naming one is refused rather than silently kept.
    status, body = await api.call("PATCH", _user_path(shop, shop["manager"]), await api.staff("operator"), json={"store_id": shop["store"]})
    assert (status, list(body["error"]["details"]["fields"])) == (400, ["store_id"])
    for data, field in (({"status": "disabled"}, "status"), ({"role": "cashier", "store_id": shop["store"]}, "role")):
        status, body = await api.call("PATCH", _user_path(shop, shop["manager"]), manager, json=data)
        assert (status, list(body["error"]["details"]["fields"])) == (400, [field])


async def test_a_merchant_user_is_reached_only_through_its_own_merchant(api, shop):
    other = await api.merchant()
    _, other_manager = await api.merchant_user(other["id"], "manager")
    status, body = await api.call("PATCH", _user_path(shop, shop["cashier"]), other_manager, json={"status": "disabled"})
    assert (status, _code(body)) == (404, "not_found")
    wrong_merchant = f"/api/v1/merchants/{other['id']}/users/{shop['cashier']['id']}"
    status, body = await api.call("PATCH", wrong_merchant, await api.staff("admin"), json={"status": "disabled"})
    assert (status, _code(body)) == (404, "not_found")
    staff_user = await _staff_user(api)
    staff_path = f"/api/v1/merchants/{shop['merchant']}/users/{staff_user['id']}"
    assert (await api.call("PATCH", staff_path, await api.staff("admin"), json={"status": "disabled"}))[0] == 404
    for token in (shop["cashier_token"], await api.staff("auditor")):
        status, body = await api.call("PATCH", _user_path(shop, shop["manager"]), token, json={"status": "disabled"})
        assert (status, _code(body)) == (403, "forbidden")
    assert (await api.call("GET", "/api/v1/merchant/redemptions", shop["cashier_token"]))[0] == 200


async def test_a_suspended_merchants_manager_changes_no_users_but_still_reads(api, shop):
    operator = await api.staff("operator")
    await api.ok("PATCH", f"/api/v1/merchants/{shop['merchant']}", operator, json={"status": "suspended"})
    manager = shop["manager_token"]
    users_path = f"/api/v1/merchants/{shop['merchant']}/users"
    new_user = {"username": unique("cashier"), "password": PASSWORD, "role": "cashier", "store_id": shop["store"]}
    status, body = await api.call("POST", users_path, manager, json=new_user)
    assert (status, _code(body)) == (403, "merchant_suspended")
    status, body = await api.call("PATCH", _user_path(shop, shop["cashier"]), manager, json={"status": "disabled"})
    assert (status, _code(body)) == (403, "merchant_suspended")
    assert (await api.call("GET", users_path, manager))[0] == 200
    assert (await api.call("GET", f"/api/v1/merchants/{shop['merchant']}", manager))[0] == 200
    assert (await api.call("GET", "/api/v1/merchant/usage", manager))[0] == 200
    # The bank's staff still act on a suspended merchant's accounts.
    disabled = await api.ok("PATCH", _user_path(shop, shop["cashier"]), operator, json={"status": "disabled"})
    assert disabled["status"] == "disabled"
    assert (await api.call("POST", users_path, operator, json=new_user))[0] == 201


# ---- one's own password ----------------------------------------------------------------------------------------

async def test_a_user_changes_their_own_password_and_every_older_session_ends(api, shop):
    username = shop["cashier"]["username"]
    other_device = await api.login(username)
    body = await api.ok(
        "POST", "/api/v1/auth/password", shop["cashier_token"],
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert body["token_type"] == "Bearer" and body["role"] == "cashier" and body["store_id"] == shop["store"]
    for stale in (shop["cashier_token"], other_device):
        assert (await api.call("GET", "/api/v1/merchant/redemptions", stale))[0] == 401
    assert (await api.call("GET", "/api/v1/merchant/redemptions", body["access_token"]))[0] == 200
    assert (await _login(api, username))[0] == 401 and (await _login(api, username, NEW_PASSWORD))[0] == 200
    entries = await api.audit_entries(entity_type="user", entity_id=shop["cashier"]["id"])
    assert entries[0]["action"] == "user.password_change" and NEW_PASSWORD not in str(entries[0])


async def test_own_password_refusals(api, shop, clock):
    token = shop["manager_token"]
    cases = [
        ({"current_password": "wrong password", "new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD}, "new_password"),
    ]
    for data, field in cases:
        status, body = await api.call("POST", "/api/v1/auth/password", token, json=data)
        assert (status, list(body["error"]["details"]["fields"])) == (400, [field]), data
    client = await api.new_client()
    status, body = await api.call(
        "POST", "/api/v1/auth/password", await api.client_session(client["id"]),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert (status, _code(body)) == (403, "forbidden")
    # Guessing the current password with a stolen session is throttled as logins are.
    for _ in range(4):
        await api.call("POST", "/api/v1/auth/password", token, json={"current_password": "guess", "new_password": NEW_PASSWORD})
    status, body = await api.call("POST", "/api/v1/auth/password", token, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert (status, _code(body)) == (429, "too_many_attempts")
