"""The audit log: who may read it, its filters and pages, and that nothing can change or delete an entry."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import asyncpg
import pytest

from perks.audit import service as audit
from perks.core.auth import Principal
from tests.support import PASSWORD, unique

AUDIT = "/api/v1/audit"


async def _staff_user(api, role: str = "auditor") -> dict:
    """A staff user created by an admin through the API (one ``user.create`` entry)."""
    data = {"username": unique("u"), "password": PASSWORD, "role": role}
    return await api.ok("POST", "/api/v1/staff", await api.staff("admin"), 201, json=data)


async def test_admin_and_auditor_read_the_log_and_no_one_else(api):
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    for role in ("admin", "auditor"):
        body = await api.ok("GET", AUDIT, await api.staff(role))
        assert body["items"]
    _, manager = await api.merchant_user(merchant["id"], "manager")
    _, cashier = await api.merchant_user(merchant["id"], "cashier", store["id"])
    for token in (await api.staff("operator"), manager, cashier):
        status, body = await api.call("GET", AUDIT, token)
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await api.call("GET", AUDIT)
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_an_entry_names_its_actor_action_entity_and_change(api):
    user = await _staff_user(api)
    [entry] = await api.audit_entries(entity_type="user", entity_id=user["id"])
    assert set(entry) == {"id", "at", "actor", "action", "entity_type", "entity_id", "before", "after"}
    assert isinstance(entry["id"], str)
    assert entry["at"].endswith("+00:00")
    assert entry["actor"]["role"] == "admin"
    assert entry["actor"]["username"].startswith("admin")
    assert entry["actor"]["id"]
    assert (entry["action"], entry["entity_type"], entry["entity_id"]) == ("user.create", "user", user["id"])
    assert (entry["before"], entry["after"]) == (None, user)


async def test_the_command_line_is_named_as_the_system(api):
    await api.staff("admin")  # created the way `perks staff create` does
    entries = await api.audit_entries(entity_type="user")
    system_made = [e for e in entries if e["after"]["role"] == "admin"]
    assert system_made[0]["actor"] == {"id": None, "username": "system", "role": "system"}


async def test_newest_first_in_pages(api):
    users = [await _staff_user(api) for _ in range(5)]
    token = await api.staff("auditor")
    seen, cursor = [], None
    while True:
        params = {"limit": "2", "entity_type": "user"} | ({"cursor": cursor} if cursor else {})
        body = await api.ok("GET", AUDIT, token, params=params)
        assert len(body["items"]) <= 2
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    ids = [int(entry["id"]) for entry in seen]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    made_by_admin = [e["entity_id"] for e in seen if e["actor"]["role"] == "admin"]
    assert made_by_admin == [u["id"] for u in reversed(users)]


async def test_filters_by_entity_and_actor(api):
    merchant = await api.merchant()
    first = await _staff_user(api)
    await _staff_user(api)

    by_type = await api.audit_entries(entity_type="merchant")
    assert [(e["action"], e["entity_id"]) for e in by_type] == [("merchant.create", merchant["id"])]
    by_id = await api.audit_entries(entity_id=first["id"])
    assert [e["entity_id"] for e in by_id] == [first["id"]]
    assert await api.audit_entries(entity_type="merchant", entity_id=first["id"]) == []

    admin_entry = by_id[0]["actor"]
    by_username = await api.audit_entries(actor=admin_entry["username"])
    by_actor_id = await api.audit_entries(actor=admin_entry["id"])
    assert by_username == by_actor_id
    assert len(by_username) == 2
    assert {e["actor"]["username"] for e in by_username} == {admin_entry["username"]}
    assert await api.audit_entries(actor="nobody-at-all") == []


async def test_filters_by_time(api, db):
    early = await _staff_user(api)
    boundary = await db.fetchval("SELECT clock_timestamp()")
    late = await _staff_user(api)

    after = await api.audit_entries(entity_type="user", from_=boundary.isoformat())
    before = await api.audit_entries(entity_type="user", to=boundary.isoformat())
    assert late["id"] in [e["entity_id"] for e in after]
    assert early["id"] not in [e["entity_id"] for e in after]
    assert early["id"] in [e["entity_id"] for e in before]
    assert late["id"] not in [e["entity_id"] for e in before]
    # The same instant written in another offset is the same instant.
    shanghai = boundary.astimezone(ZoneInfo("Asia/Shanghai")).isoformat()
    assert await api.audit_entries(entity_type="user", from_=shanghai) == after
    assert await api.audit_entries(entity_type="user", from_=boundary.isoformat(), to=boundary.isoformat()) == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"from": "2025-01-01T00:00:00"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "0001-01-01T00:00:00+01:00"}, "to"),
        ({"from": "9999-12-31T23:00:00-05:00"}, "from"),
        ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "to"),
        ({"entity_type": "a\x00b"}, "entity_type"),
        ({"actor": "x" * 65}, "actor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "WyJ4Il0"}, "cursor"),  # ["x"]
        ({"cursor": "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDBd"}, "cursor"),  # [1e29], beyond bigint
        ({"cursor": "W3RydWVd"}, "cursor"),  # [true]
    ],
)
async def test_a_bad_audit_query_is_400(api, params, field):
    status, body = await api.call("GET", AUDIT, await api.staff("auditor"), params=params)
    assert status == 400, body
    assert field in body["error"]["details"]["fields"]


async def test_a_refused_change_leaves_no_entry(api):
    taken = await _staff_user(api)
    status, _ = await api.call(
        "POST", "/api/v1/staff", await api.staff("admin"),
        json={"username": taken["username"], "password": PASSWORD, "role": "operator"},
    )
    assert status == 409
    created = [e for e in await api.audit_entries(entity_type="user") if e["after"]["username"] == taken["username"]]
    assert len(created) == 1


async def _first_entry_id(db) -> int:
    return await db.fetchval("SELECT min(id) FROM audit_log")


async def test_the_database_refuses_to_update_an_entry(api, db):
    await _staff_user(api)
    entry_id = await _first_entry_id(db)
    original = dict(await db.fetchrow("SELECT * FROM audit_log WHERE id = $1", entry_id))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("UPDATE audit_log SET action = 'nothing.happened' WHERE id = $1", entry_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE audit_log SET after = NULL")
    assert dict(await db.fetchrow("SELECT * FROM audit_log WHERE id = $1", entry_id)) == original


async def test_the_database_refuses_to_delete_or_truncate_entries(api, db):
    await _staff_user(api)
    count = await db.fetchval("SELECT count(*) FROM audit_log")
    assert count >= 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("DELETE FROM audit_log WHERE id = $1", await _first_entry_id(db))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM audit_log")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("TRUNCATE audit_log")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("TRUNCATE audit_log, login_failures")
    assert await db.fetchval("SELECT count(*) FROM audit_log") == count


async def test_a_client_acting_is_named_by_its_id(api, db):
    client = await api.new_client()
    actor = Principal(id=client["id"], role="client")
    async with db.transaction():
        await audit.record(db, actor, "voucher.issue", "voucher", "v1234567", None, {"perk": "car_wash"})
    [entry] = await api.audit_entries(actor=client["id"], entity_type="voucher")
    assert entry["actor"] == {"id": client["id"], "username": f"client:{client['id']}", "role": "client"}


async def test_a_change_and_its_entry_are_written_by_one_statement_or_not_at_all(api, db):
    perk = await api.perk()
    actor = Principal(id="", username="ops", role="admin")
    rename = "UPDATE perks SET name = $2 WHERE code = $1 RETURNING code"
    entries = "SELECT count(*) FROM audit_log WHERE action = 'perk.rename' AND entity_id = $1"

    assert await audit.record_change(db, rename, (perk["code"], "洗车 Plus"), actor, "perk.rename", "perk",
                                     perk["code"], None, {"name": "洗车 Plus"}) == 1
    assert await db.fetchval("SELECT name FROM perks WHERE code = $1", perk["code"]) == "洗车 Plus"
    assert await db.fetchval(entries, perk["code"]) == 1

    # Nothing changed: no entry.
    assert await audit.record_change(db, rename, ("no_such_perk", "x"), actor, "perk.rename", "perk",
                                     "no_such_perk", None, {"name": "x"}) == 0
    assert await db.fetchval(entries, "no_such_perk") == 0

    # The entry refused (no action): the change is undone with it.
    with pytest.raises(asyncpg.NotNullViolationError):
        await audit.record_change(db, rename, (perk["code"], "never"), actor, None, "perk", perk["code"], None, None)
    assert await db.fetchval("SELECT name FROM perks WHERE code = $1", perk["code"]) == "洗车 Plus"
