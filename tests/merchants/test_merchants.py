"""Merchants, stores, partner agreements and yearly usage: who may do what, what is refused, what is audited."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from tests.support import unique

MERCHANTS = "/api/v1/merchants"


@pytest.fixture
async def shop(api):
    """A merchant with one store, its manager and cashier (and their tokens)."""
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    manager, manager_token = await api.merchant_user(merchant["id"], "manager")
    cashier, cashier_token = await api.merchant_user(merchant["id"], "cashier", store["id"])
    return {
        "merchant": merchant,
        "store": store,
        "manager": manager,
        "manager_token": manager_token,
        "cashier": cashier,
        "cashier_token": cashier_token,
    }


@pytest.fixture
async def other_shop(api):
    """Another merchant, with a store and a manager of its own."""
    merchant = await api.merchant()
    store = await api.store(merchant["id"])
    manager, manager_token = await api.merchant_user(merchant["id"], "manager")
    return {"merchant": merchant, "store": store, "manager": manager, "manager_token": manager_token}


def _fields(body) -> dict:
    assert body["error"]["code"] == "bad_request", body
    return body["error"]["details"]["fields"]


# ---- merchants -------------------------------------------------------------------------------


async def test_operator_creates_an_active_merchant_and_it_is_audited(api):
    operator = await api.staff("operator")
    data = {"name": "  云南洗车行  ", "category": "car_wash", "city": "Yuxi", "contact_phone": "+86 877 123-4567"}
    merchant = await api.ok("POST", MERCHANTS, operator, 201, json=data)

    assert merchant["name"] == "云南洗车行"
    assert merchant["category"] == "car_wash"
    assert merchant["city"] == "Yuxi"
    assert merchant["contact_phone"] == "+86 877 123-4567"
    assert merchant["status"] == "active"
    assert datetime.fromisoformat(merchant["created_at"]).tzinfo is not None
    assert await api.ok("GET", f"{MERCHANTS}/{merchant['id']}", operator) == merchant

    [entry] = await api.audit_entries(entity_type="merchant", entity_id=merchant["id"])
    assert entry["action"] == "merchant.create"
    assert entry["actor"]["role"] == "operator"
    assert entry["before"] is None
    assert entry["after"] == merchant


async def test_optional_merchant_fields_default_to_null(api):
    merchant = await api.ok("POST", MERCHANTS, await api.staff("admin"), 201, json={"name": "A", "category": "spa"})
    assert (merchant["city"], merchant["contact_phone"], merchant["status"]) == (None, None, "active")


@pytest.mark.parametrize("role", ["auditor", "manager", "cashier"])
async def test_only_admin_and_operator_create_merchants(api, shop, role):
    token = {"auditor": await api.staff("auditor"), "manager": shop["manager_token"], "cashier": shop["cashier_token"]}[role]
    status, body = await api.call("POST", MERCHANTS, token, json={"name": "X", "category": "spa"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await api.call("POST", MERCHANTS, None, json={"name": "X", "category": "spa"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "data, field",
    [
        ({"category": "spa"}, "name"),
        ({"name": "   ", "category": "spa"}, "name"),
        ({"name": "x" * 201, "category": "spa"}, "name"),
        ({"name": "a\x00b", "category": "spa"}, "name"),
        ({"name": "A"}, "category"),
        ({"name": "A", "category": 7}, "category"),
        ({"name": "A", "category": "spa", "city": "c" * 101}, "city"),
        ({"name": "A", "category": "spa", "contact_phone": "call me"}, "contact_phone"),
        ({"name": "A", "category": "spa", "status": "suspended"}, "status"),
        ({"name": "A", "category": "spa", "owner": "x"}, "owner"),
    ],
)
async def test_a_bad_merchant_field_is_400_naming_it(api, data, field):
    status, body = await api.call("POST", MERCHANTS, await api.staff("operator"), json=data)
    assert status == 400
    assert field in _fields(body)
    assert await api.audit_entries(entity_type="merchant") == []


async def test_merchant_list_pages_oldest_first_and_filters_by_status(api):
    operator = await api.staff("operator")
    created = [await api.merchant() for _ in range(5)]
    await api.ok("PATCH", f"{MERCHANTS}/{created[1]['id']}", operator, json={"status": "suspended"})

    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = await api.ok("GET", MERCHANTS, await api.staff("auditor"), params=params)
        assert len(body["items"]) <= 2
        seen += [m["id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [m["id"] for m in created]

    suspended = await api.ok("GET", MERCHANTS, operator, params={"status": "suspended"})
    assert [m["id"] for m in suspended["items"]] == [created[1]["id"]]
    assert suspended["next_cursor"] is None
    active = await api.ok("GET", MERCHANTS, await api.staff("admin"), params={"status": "active"})
    assert [m["id"] for m in active["items"]] == [m["id"] for i, m in enumerate(created) if i != 1]


@pytest.mark.parametrize(
    "params, field",
    [({"status": "closed"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
     ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "WyJ4IiwieSJd"}, "cursor")],
)
async def test_a_bad_merchant_list_query_is_400(api, params, field):
    status, body = await api.call("GET", MERCHANTS, await api.staff("operator"), params=params)
    assert status == 400
    assert field in _fields(body)


async def test_merchant_users_may_not_list_merchants(api, shop):
    for token in (shop["manager_token"], shop["cashier_token"]):
        status, body = await api.call("GET", MERCHANTS, token)
        assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_reading_one_merchant(api, shop, other_shop):
    mine = f"{MERCHANTS}/{shop['merchant']['id']}"
    for role in ("admin", "operator", "auditor"):
        assert await api.ok("GET", mine, await api.staff(role)) == shop["merchant"]
    assert await api.ok("GET", mine, shop["manager_token"]) == shop["merchant"]

    status, body = await api.call("GET", f"{MERCHANTS}/{other_shop['merchant']['id']}", shop["manager_token"])
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await api.call("GET", mine, shop["cashier_token"])
    assert (status, body["error"]["code"]) == (403, "forbidden")
    for missing in ("00000000-0000-0000-0000-000000000000", "not-an-id"):
        status, body = await api.call("GET", f"{MERCHANTS}/{missing}", await api.staff("operator"))
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_operator_updates_and_suspends_a_merchant_with_before_and_after_audited(api, shop):
    path = f"{MERCHANTS}/{shop['merchant']['id']}"
    before = shop["merchant"]
    after = await api.ok(
        "PATCH", path, await api.staff("operator"), json={"name": "新名字", "city": None, "status": "suspended"}
    )
    assert after["name"] == "新名字"
    assert after["city"] is None
    assert after["status"] == "suspended"
    assert (after["category"], after["contact_phone"], after["created_at"]) == (
        before["category"], before["contact_phone"], before["created_at"]
    )
    assert await api.ok("GET", path, shop["manager_token"]) == after

    entry = (await api.audit_entries(entity_type="merchant", entity_id=before["id"]))[0]
    assert entry["action"] == "merchant.update"
    assert entry["before"] == before
    assert entry["after"] == after

    reactivated = await api.ok("PATCH", path, await api.staff("admin"), json={"status": "active"})
    assert reactivated["status"] == "active"


async def test_a_patch_that_changes_nothing_writes_no_audit_entry(api, shop):
    merchant = shop["merchant"]
    path = f"{MERCHANTS}/{merchant['id']}"
    assert await api.ok("PATCH", path, await api.staff("operator"), json={"name": merchant["name"]}) == merchant
    assert await api.ok("PATCH", path, await api.staff("operator"), json={}) == merchant
    entries = await api.audit_entries(entity_type="merchant", entity_id=merchant["id"])
    assert [e["action"] for e in entries] == ["merchant.create"]


@pytest.mark.parametrize(
    "data, field",
    [({"name": None}, "name"), ({"category": None}, "category"), ({"status": None}, "status"),
     ({"status": "closed"}, "status"), ({"name": ""}, "name"), ({"id": "x"}, "id")],
)
async def test_a_bad_merchant_patch_is_400(api, shop, data, field):
    status, body = await api.call("PATCH", f"{MERCHANTS}/{shop['merchant']['id']}", await api.staff("operator"), json=data)
    assert status == 400
    assert field in _fields(body)


async def test_who_may_patch_a_merchant(api, shop):
    path = f"{MERCHANTS}/{shop['merchant']['id']}"
    for token in (await api.staff("auditor"), shop["manager_token"], shop["cashier_token"]):
        status, body = await api.call("PATCH", path, token, json={"status": "suspended"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _ = await api.call("PATCH", f"{MERCHANTS}/{unique('x')}", await api.staff("operator"), json={"name": "n"})
    assert status == 404
    assert (await api.ok("GET", path, await api.staff("auditor")))["status"] == "active"


# ---- stores ----------------------------------------------------------------------------------


async def test_operator_adds_a_store_and_it_is_audited(api, shop):
    merchant_id = shop["merchant"]["id"]
    store = await api.ok(
        "POST", f"{MERCHANTS}/{merchant_id}/stores", await api.staff("operator"), 201,
        json={"name": "红塔店", "address": "玉溪市红塔大道 1 号"},
    )
    assert store["merchant_id"] == merchant_id
    assert (store["name"], store["address"]) == ("红塔店", "玉溪市红塔大道 1 号")
    [entry] = await api.audit_entries(entity_type="store", entity_id=store["id"])
    assert (entry["action"], entry["before"], entry["after"]) == ("store.create", None, store)

    bare = await api.ok("POST", f"{MERCHANTS}/{merchant_id}/stores", await api.staff("admin"), 201, json={"name": "B"})
    assert bare["address"] is None


async def test_store_creation_refusals(api, shop):
    path = f"{MERCHANTS}/{shop['merchant']['id']}/stores"
    for token in (await api.staff("auditor"), shop["manager_token"], shop["cashier_token"]):
        status, body = await api.call("POST", path, token, json={"name": "S"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
    operator = await api.staff("operator")
    for data, field in (({}, "name"), ({"name": " "}, "name"), ({"name": "S", "address": "a" * 501}, "address"),
                        ({"name": "S", "phone": "1"}, "phone")):
        status, body = await api.call("POST", path, operator, json=data)
        assert status == 400 and field in _fields(body), (data, body)
    status, body = await api.call(
        "POST", f"{MERCHANTS}/00000000-0000-0000-0000-000000000000/stores", operator, json={"name": "S"}
    )
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_listing_stores(api, shop, other_shop):
    merchant_id = shop["merchant"]["id"]
    more = [await api.store(merchant_id) for _ in range(3)]
    path = f"{MERCHANTS}/{merchant_id}/stores"
    expected = [shop["store"]] + more

    first = await api.ok("GET", path, shop["manager_token"], params={"limit": "3"})
    second = await api.ok("GET", path, shop["manager_token"], params={"limit": "3", "cursor": first["next_cursor"]})
    assert first["items"] + second["items"] == expected
    assert second["next_cursor"] is None
    for role in ("admin", "operator", "auditor"):
        assert (await api.ok("GET", path, await api.staff(role)))["items"] == expected

    status, _ = await api.call("GET", f"{MERCHANTS}/{other_shop['merchant']['id']}/stores", shop["manager_token"])
    assert status == 404
    status, _ = await api.call("GET", path, shop["cashier_token"])
    assert status == 403
    status, _ = await api.call("GET", f"{MERCHANTS}/00000000-0000-0000-0000-000000000000/stores", await api.staff("admin"))
    assert status == 404


async def test_updating_a_store(api, shop, other_shop):
    store = shop["store"]
    path = f"{MERCHANTS}/{shop['merchant']['id']}/stores/{store['id']}"
    updated = await api.ok("PATCH", path, await api.staff("operator"), json={"name": "新店名", "address": None})
    assert (updated["name"], updated["address"], updated["id"]) == ("新店名", None, store["id"])
    entry = (await api.audit_entries(entity_type="store", entity_id=store["id"]))[0]
    assert (entry["action"], entry["before"], entry["after"]) == ("store.update", store, updated)

    # Another merchant's store through this merchant's path does not exist.
    foreign = f"{MERCHANTS}/{shop['merchant']['id']}/stores/{other_shop['store']['id']}"
    status, _ = await api.call("PATCH", foreign, await api.staff("operator"), json={"name": "x"})
    assert status == 404
    status, body = await api.call("PATCH", path, await api.staff("operator"), json={"name": None})
    assert status == 400 and "name" in _fields(body)
    for token in (await api.staff("auditor"), shop["manager_token"]):
        status, _ = await api.call("PATCH", path, token, json={"name": "x"})
        assert status == 403


# ---- agreements and usage --------------------------------------------------------------------


async def test_putting_an_agreement_creates_then_replaces_it(api, shop):
    perk = await api.perk()
    merchant_id = shop["merchant"]["id"]
    path = f"{MERCHANTS}/{merchant_id}/perks/{perk['code']}"

    created = await api.ok("PUT", path, await api.staff("operator"), json={"yearly_capacity": 100, "unit_price_fen": 1500})
    assert (created["merchant_id"], created["perk"]) == (merchant_id, perk["code"])
    assert (created["yearly_capacity"], created["unit_price_fen"]) == (100, 1500)
    replaced = await api.ok("PUT", path, await api.staff("admin"), json={"yearly_capacity": None, "unit_price_fen": 0})
    assert (replaced["yearly_capacity"], replaced["unit_price_fen"]) == (None, 0)
    assert replaced["created_at"] == created["created_at"]

    entries = await api.audit_entries(entity_type="agreement", entity_id=f"{merchant_id}/{perk['code']}")
    assert [e["action"] for e in entries] == ["agreement.put", "agreement.put"]
    assert (entries[1]["before"], entries[1]["after"]) == (None, created)
    assert (entries[0]["before"], entries[0]["after"]) == (created, replaced)

    listed = await api.ok("GET", f"{MERCHANTS}/{merchant_id}/perks", shop["manager_token"])
    assert listed == {"items": [replaced], "next_cursor": None}


async def test_the_same_agreement_again_changes_nothing(api, shop):
    perk = await api.perk()
    first = await api.agree(shop["merchant"]["id"], perk["code"], 10, 800)
    assert await api.agree(shop["merchant"]["id"], perk["code"], 10, 800) == first
    entries = await api.audit_entries(entity_type="agreement")
    assert len(entries) == 1


async def test_concurrent_puts_of_one_agreement_each_audit_the_one_they_replaced(api, shop):
    perk = await api.perk()
    merchant_id = shop["merchant"]["id"]
    path = f"{MERCHANTS}/{merchant_id}/perks/{perk['code']}"
    operator = await api.staff("operator")
    results = await asyncio.gather(
        *(api.call("PUT", path, operator, json={"yearly_capacity": 10, "unit_price_fen": price}) for price in range(1, 9))
    )
    assert [status for status, _ in results] == [200] * 8

    entries = list(reversed(await api.audit_entries(entity_type="agreement")))
    assert len(entries) == 8
    assert entries[0]["before"] is None
    for earlier, later in zip(entries, entries[1:]):
        assert later["before"] == earlier["after"]
    final = await api.ok("GET", f"{MERCHANTS}/{merchant_id}/perks", operator)
    assert final["items"] == [entries[-1]["after"]]


async def test_agreement_refusals(api, shop, other_shop):
    perk = await api.perk()
    merchant_id = shop["merchant"]["id"]
    path = f"{MERCHANTS}/{merchant_id}/perks/{perk['code']}"
    operator = await api.staff("operator")
    good = {"yearly_capacity": 5, "unit_price_fen": 100}

    for bad, field in (
        ({"yearly_capacity": -1, "unit_price_fen": 1}, "yearly_capacity"),
        ({"yearly_capacity": "5", "unit_price_fen": 1}, "yearly_capacity"),
        ({"yearly_capacity": 2**31, "unit_price_fen": 1}, "yearly_capacity"),
        ({"unit_price_fen": 1}, "yearly_capacity"),
        ({"yearly_capacity": 1, "unit_price_fen": -1}, "unit_price_fen"),
        ({"yearly_capacity": 1, "unit_price_fen": 1.5}, "unit_price_fen"),
        ({"yearly_capacity": 1, "unit_price_fen": 10**19}, "unit_price_fen"),
        ({"yearly_capacity": 1}, "unit_price_fen"),
        (good | {"perk": "x"}, "perk"),
    ):
        status, body = await api.call("PUT", path, operator, json=bad)
        assert status == 400 and field in _fields(body), (bad, body)

    # A NUL byte in a path parameter is refused at the edge, naming it (tests/test_hostile_input.py).
    status, body = await api.call("PUT", f"{MERCHANTS}/{merchant_id}/perks/a%00b", operator, json=good)
    assert (status, _fields(body)) == (400, {"perk": "must not contain the NUL character"}), body
    for missing in (f"{MERCHANTS}/{merchant_id}/perks/no_such_perk", f"{MERCHANTS}/{merchant_id}/perks/Bad-Code!",
                    f"{MERCHANTS}/{merchant_id}/perks/{'a' * 33}",
                    f"{MERCHANTS}/00000000-0000-0000-0000-000000000000/perks/{perk['code']}"):
        status, body = await api.call("PUT", missing, operator, json=good)
        assert (status, body["error"]["code"]) == (404, "not_found"), missing

    for token in (await api.staff("auditor"), shop["manager_token"], shop["cashier_token"]):
        status, _ = await api.call("PUT", path, token, json=good)
        assert status == 403
    assert await api.audit_entries(entity_type="agreement") == []

    await api.agree(merchant_id, perk["code"], 5)
    status, _ = await api.call("GET", f"{MERCHANTS}/{merchant_id}/perks", other_shop["manager_token"])
    assert status == 404
    status, _ = await api.call("GET", f"{MERCHANTS}/{merchant_id}/perks", shop["cashier_token"])
    assert status == 403


async def test_agreements_list_pages_by_perk_code(api, shop):
    merchant_id = shop["merchant"]["id"]
    codes = sorted([(await api.perk())["code"] for _ in range(3)])
    for code in reversed(codes):
        await api.agree(merchant_id, code, None)
    path = f"{MERCHANTS}/{merchant_id}/perks"
    first = await api.ok("GET", path, await api.staff("auditor"), params={"limit": "2"})
    second = await api.ok("GET", path, await api.staff("auditor"), params={"limit": "2", "cursor": first["next_cursor"]})
    assert [a["perk"] for a in first["items"] + second["items"]] == codes
    assert second["next_cursor"] is None


async def _set_used(db, merchant_id: str, perk: str, year: int, used: int) -> None:
    # The counter redemptions move (redeeming is another area's work; usage only reads it).
    await db.execute(
        "INSERT INTO merchant_yearly_usage (merchant_id, perk_code, year, used) VALUES ($1, $2, $3, $4)",
        merchant_id, perk, year, used,
    )


async def test_usage_reports_capacity_use_and_price_per_perk_and_year(api, db, shop, clock):
    merchant_id = shop["merchant"]["id"]
    capped, uncapped, lowered, unused = sorted([(await api.perk())["code"] for _ in range(4)])
    await api.agree(merchant_id, capped, 10, 1500)
    await api.agree(merchant_id, uncapped, None, 900)
    await api.agree(merchant_id, lowered, 5, 100)
    await api.agree(merchant_id, unused, 0, 0)
    await _set_used(db, merchant_id, capped, 2025, 4)
    await _set_used(db, merchant_id, uncapped, 2025, 37)
    await _set_used(db, merchant_id, lowered, 2025, 6)  # capacity lowered below what was already used
    await _set_used(db, merchant_id, capped, 2026, 1)

    usage = await api.ok("GET", f"{MERCHANTS}/{merchant_id}/usage", shop["manager_token"], params={"year": "2025"})
    assert usage == {
        "year": 2025,
        "items": [
            {"perk": capped, "yearly_capacity": 10, "used": 4, "remaining": 6, "unit_price_fen": 1500},
            {"perk": uncapped, "yearly_capacity": None, "used": 37, "remaining": None, "unit_price_fen": 900},
            {"perk": lowered, "yearly_capacity": 5, "used": 6, "remaining": 0, "unit_price_fen": 100},
            {"perk": unused, "yearly_capacity": 0, "used": 0, "remaining": 0, "unit_price_fen": 0},
        ],
    }

    # Without ?year= it is the quota year now in the bank's zone: 2025-12-31 16:30 UTC is already 2026 in Shanghai.
    clock.set(datetime(2025, 12, 31, 16, 30, tzinfo=timezone.utc))
    usage = await api.ok("GET", f"{MERCHANTS}/{merchant_id}/usage", await api.staff("auditor"))
    assert usage["year"] == 2026
    assert [(i["perk"], i["used"], i["remaining"]) for i in usage["items"]] == [
        (capped, 1, 9), (uncapped, 0, None), (lowered, 0, 5), (unused, 0, 0)
    ]
    clock.set(datetime(2025, 12, 31, 15, 59, tzinfo=timezone.utc))
    usage = await api.ok("GET", f"{MERCHANTS}/{merchant_id}/usage", await api.staff("admin"))
    assert usage["year"] == 2025


async def test_usage_of_a_merchant_without_agreements_is_empty(api, shop):
    usage = await api.ok("GET", f"{MERCHANTS}/{shop['merchant']['id']}/usage", await api.staff("operator"), params={"year": "2030"})
    assert usage == {"year": 2030, "items": []}


async def test_usage_refusals(api, shop, other_shop):
    path = f"{MERCHANTS}/{shop['merchant']['id']}/usage"
    for year in ("abc", "1999", "10000", "2025.5"):
        status, body = await api.call("GET", path, await api.staff("operator"), params={"year": year})
        assert status == 400 and "year" in _fields(body), year
    status, _ = await api.call("GET", path, other_shop["manager_token"])
    assert status == 404
    status, _ = await api.call("GET", path, shop["cashier_token"])
    assert status == 403
    status, _ = await api.call("GET", f"{MERCHANTS}/00000000-0000-0000-0000-000000000000/usage", await api.staff("admin"))
    assert status == 404
