"""The catalogue: tiers, perks and entitlements — validation, roles, conflicts, pagination and the audit trail."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

import asyncpg
import pytest

from perks.accounts.service import create_user
from perks.catalogue import service
from perks.core.auth import SYSTEM
from perks.core.errors import BadRequest
from tests.support import PASSWORD, unique

ROLES = ("admin", "operator", "auditor", "manager", "cashier", "client")
WRITERS = {"admin", "operator"}
READERS = {"admin", "operator", "auditor"}


async def role_tokens(api, db) -> dict[str, str]:
    """A session token for every role."""
    tokens = {role: await api.staff(role) for role in ("admin", "operator", "auditor")}
    # The merchant and its store are made in SQL so that these tests stand apart from the merchants module.
    merchant_id = await db.fetchval("INSERT INTO merchants (name, category) VALUES ('m', 'car_wash') RETURNING id")
    store_id = await db.fetchval("INSERT INTO stores (merchant_id, name) VALUES ($1, 's') RETURNING id", merchant_id)
    for role in ("manager", "cashier"):
        username = unique(role)
        await create_user(
            db, SYSTEM, username=username, password=PASSWORD, role=role, merchant_id=merchant_id, store_id=store_id
        )
        tokens[role] = await api.login(username)
    client = await api.new_client()
    tokens["client"] = await api.client_session(client["id"])
    return tokens


async def audit_of(api, entity_type: str, entity_id: str) -> list[dict]:
    """The audit entries of one object, newest first."""
    path = f"/api/v1/audit?entity_type={entity_type}&entity_id={entity_id}"
    return (await api.ok("GET", path, await api.staff("admin")))["items"]


def cursor_of(values: list) -> str:
    """A cursor in our encoding holding ``values`` (valid or not as a sort key)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


async def assert_refused(api, method: str, path: str, cases: list[tuple[Any, ...]]) -> None:
    """Each ``(body, field[, problem])`` must be a 400 naming ``field``; every case that is not is reported."""
    token = await api.staff("operator")
    wrong = []
    for body, field, *problem in cases:
        status, answer = await api.call(method, path, token, json=body)
        fields = answer["error"]["details"].get("fields", {}) if status == 400 else {}
        if field not in fields or (problem and fields[field] != problem[0]):
            wrong.append((body, field, *problem, status, answer))
    assert not wrong, wrong


async def walk(api, path: str, limit: int) -> list[list[dict]]:
    """Every page of a list, following ``next_cursor``."""
    token = await api.staff("auditor")
    pages, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = await api.ok("GET", path + query, token)
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def items(api, path: str) -> list[dict]:
    return (await api.ok("GET", path, await api.staff("admin")))["items"]


# Tiers ----------------------------------------------------------------------------------------------------------

TIER = {"code": "gold", "name": "Gold", "rank": 1, "min_points": 0}


async def test_create_tier_returns_it_and_audits_it(api):
    body = {"code": "gold_2", "name": "金卡", "rank": 20, "min_points": 5000}
    tier = await api.ok("POST", "/api/v1/tiers", await api.staff("admin"), 201, json=body)
    assert {k: tier[k] for k in body} == body
    assert tier["created_at"] == tier["updated_at"] and tier["created_at"].endswith("+00:00")
    assert await api.ok("GET", "/api/v1/tiers/gold_2", await api.staff("auditor")) == tier
    [entry] = await audit_of(api, "tier", "gold_2")
    assert (entry["action"], entry["before"], entry["after"]) == ("tier.create", None, tier)
    assert entry["actor"]["role"] == "admin"


async def test_create_tier_refuses_each_bad_field(api):
    bad = [
        ("code", "Gold"), ("code", ""), ("code", "a" * 33), ("code", "gold-1"), ("code", 7),
        ("name", ""), ("name", "   "), ("name", "x" * 101), ("name", "a\u0000b"), ("name", None),
        ("rank", -1), ("rank", "1"), ("rank", 1.5), ("rank", True), ("rank", 2**31), ("rank", None),
        ("min_points", -1), ("min_points", 2**63), ("colour", "gold"),
    ]
    cases: list[tuple[Any, ...]] = [(TIER | {field: value}, field) for field, value in bad]
    cases += [({k: v for k, v in TIER.items() if k != gone}, gone, "Field required") for gone in TIER]
    cases += [([], "body", "must be a JSON object"), ("gold", "body")]
    await assert_refused(api, "POST", "/api/v1/tiers", cases)
    status, answer = await api.call("POST", "/api/v1/tiers", await api.staff("admin"), data=b"")
    assert status == 400 and "body" in answer["error"]["details"]["fields"]
    assert await items(api, "/api/v1/tiers") == []


@pytest.mark.parametrize("taken, field", [({"rank": 99}, "code"), ({"code": "silver"}, "rank")])
async def test_a_taken_code_or_rank_is_409_naming_it(api, taken, field):
    await api.tier("gold", rank=1)
    status, answer = await api.call("POST", "/api/v1/tiers", await api.staff("operator"), json=TIER | taken)
    assert status == 409
    assert (answer["error"]["code"], answer["error"]["details"]) == ("conflict", {"fields": {field: "already taken"}})
    assert len(await items(api, "/api/v1/tiers")) == 1


async def test_racing_to_create_one_code_gives_one_tier_and_409s(api):
    token = await api.staff("operator")
    bodies = [TIER | {"rank": rank} for rank in range(8)]
    answers = await asyncio.gather(*(api.call("POST", "/api/v1/tiers", token, json=body) for body in bodies))
    assert sorted(status for status, _ in answers) == [201] + [409] * 7
    assert len(await audit_of(api, "tier", "gold")) == 1


async def test_tiers_are_listed_by_rank_a_page_at_a_time(api):
    ranks = random.sample(range(1000), 7)
    for rank in ranks:
        await api.tier(rank=rank)
    pages = await walk(api, "/api/v1/tiers", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [tier["rank"] for p in pages for tier in p] == sorted(ranks)
    everything = await api.ok("GET", "/api/v1/tiers?limit=500", await api.staff("admin"))
    assert len(everything["items"]) == 7 and everything["next_cursor"] is None


async def test_a_bad_page_query_is_400(api):
    await api.tier("gold")
    lists = ("/api/v1/tiers", "/api/v1/perks", "/api/v1/tiers/gold/entitlements")
    cases = [
        ("cursor=not*base64", lists),
        (f"cursor={cursor_of(['gold'])}", lists[:1]),  # a tier's cursor is its rank
        (f"cursor={cursor_of([1])}", lists[1:]),  # a perk's is its code
        (f"cursor={cursor_of(['a', 'b'])}", lists),
        (f"cursor={cursor_of([True])}", lists),
        ("limit=0", lists),
        ("limit=501", lists),
        ("limit=ten", lists),
    ]
    wrong = []
    for query, paths in cases:
        for path in paths:
            status, answer = await api.call("GET", f"{path}?{query}", await api.staff("auditor"))
            if status != 400 or query.partition("=")[0] not in answer["error"]["details"]["fields"]:
                wrong.append((path, query, status, answer))
    assert not wrong, wrong


async def test_an_unknown_tier_is_404(api):
    token = await api.staff("operator")
    for code in ("nope", "NOT_A_CODE", "x" * 40):
        for method, path, body in [
            ("GET", f"/api/v1/tiers/{code}", None),
            ("PATCH", f"/api/v1/tiers/{code}", {"name": "X"}),
            ("GET", f"/api/v1/tiers/{code}/entitlements", None),
        ]:
            status, answer = await api.call(method, path, token, json=body)
            assert (status, answer["error"]["code"]) == (404, "not_found"), (method, path)


async def test_patch_tier_changes_what_is_sent_and_audits_it(api):
    before = await api.tier("gold", name="Gold", rank=10, min_points=100)
    after = await api.ok("PATCH", "/api/v1/tiers/gold", await api.staff("operator"), json={"rank": 11, "name": "金"})
    assert after | {"updated_at": None} == before | {"rank": 11, "name": "金", "updated_at": None}
    assert after["updated_at"] > before["updated_at"]
    latest = (await audit_of(api, "tier", "gold"))[0]
    assert (latest["action"], latest["before"], latest["after"]) == ("tier.update", before, after)
    assert await api.ok("GET", "/api/v1/tiers/gold", await api.staff("auditor")) == after


async def test_patch_tier_that_changes_nothing_writes_nothing(api):
    tier = await api.tier("gold", name="Gold", rank=10)
    for body in ({}, {"name": "Gold", "rank": 10}):
        assert await api.ok("PATCH", "/api/v1/tiers/gold", await api.staff("operator"), json=body) == tier
    assert [e["action"] for e in await audit_of(api, "tier", "gold")] == ["tier.create"]


async def test_patch_tier_refuses_each_bad_field(api):
    tier = await api.tier("gold")
    await assert_refused(
        api,
        "PATCH",
        "/api/v1/tiers/gold",
        [
            ({"name": None}, "name", "must not be null"),
            ({"rank": None}, "rank", "must not be null"),
            ({"min_points": None}, "min_points", "must not be null"),
            ({"rank": -5}, "rank"),
            ({"name": ""}, "name"),
            ({"code": "platinum"}, "code", "unknown field"),
        ],
    )
    assert await api.ok("GET", "/api/v1/tiers/gold", await api.staff("admin")) == tier


async def test_patch_tier_to_a_taken_rank_is_409(api):
    await api.tier("gold", rank=2)
    await api.tier("silver", rank=1)
    status, answer = await api.call("PATCH", "/api/v1/tiers/silver", await api.staff("admin"), json={"rank": 2})
    assert status == 409 and answer["error"]["details"] == {"fields": {"rank": "already taken"}}


# Perks ----------------------------------------------------------------------------------------------------------

PERK = {"code": "wash", "name": "Wash", "category": "car_wash"}


async def test_create_perk_with_defaults_and_audit(api):
    body = {"code": "car_wash", "name": "洗车", "category": "car_wash"}
    perk = await api.ok("POST", "/api/v1/perks", await api.staff("operator"), 201, json=body)
    defaults = {"description": None, "voucher_ttl_seconds": 300, "birthday_only": False}
    assert {k: v for k, v in perk.items() if not k.endswith("_at")} == body | defaults
    [entry] = await audit_of(api, "perk", "car_wash")
    assert (entry["action"], entry["before"], entry["after"]) == ("perk.create", None, perk)


async def test_create_perk_with_every_field_at_the_limits(api):
    for code, ttl in (("short", 30), ("long", 2_592_000)):
        body = {
            "code": code,
            "name": "Birthday cake",
            "category": "bakery",
            "description": "One cake.\nAny flavour.",
            "voucher_ttl_seconds": ttl,
            "birthday_only": True,
        }
        perk = await api.ok("POST", "/api/v1/perks", await api.staff("admin"), 201, json=body)
        assert {k: perk[k] for k in body} == body
        assert await api.ok("GET", f"/api/v1/perks/{code}", await api.staff("auditor")) == perk


async def test_create_perk_refuses_each_bad_field(api):
    bad = [
        ("code", "Wash"), ("name", ""), ("name", "\t"), ("category", ""), ("category", "c" * 65),
        ("description", "d" * 2001), ("description", "nul\u0000"), ("voucher_ttl_seconds", 29),
        ("voucher_ttl_seconds", 2_592_001), ("voucher_ttl_seconds", "300"), ("voucher_ttl_seconds", None),
        ("birthday_only", "yes"), ("birthday_only", 1), ("price", 1),
    ]
    cases: list[tuple[Any, ...]] = [(PERK | {field: value}, field) for field, value in bad]
    cases += [({k: v for k, v in PERK.items() if k != gone}, gone, "Field required") for gone in PERK]
    await assert_refused(api, "POST", "/api/v1/perks", cases)
    assert await items(api, "/api/v1/perks") == []


async def test_a_taken_perk_code_is_409(api):
    await api.perk("wash")
    status, answer = await api.call("POST", "/api/v1/perks", await api.staff("admin"), json=PERK)
    assert status == 409 and answer["error"]["details"] == {"fields": {"code": "already taken"}}


async def test_perks_are_listed_by_code_a_page_at_a_time(api):
    codes = [f"p{i}{unique('')}" for i in range(5)] + ["a_b", "ab", "a9", "z"]
    for code in codes:
        await api.perk(code)
    pages = await walk(api, "/api/v1/perks", 2)
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    # Byte order: the same on every server, whatever its collation.
    assert [perk["code"] for p in pages for perk in p] == sorted(codes)


async def test_an_unknown_perk_is_404(api):
    for method, body in [("GET", None), ("PATCH", {"name": "X"})]:
        status, _ = await api.call(method, "/api/v1/perks/nope", await api.staff("admin"), json=body)
        assert status == 404


async def test_patch_perk_changes_what_is_sent_and_audits_it(api):
    before = await api.perk("wash", description="Outside only")
    change = {"description": None, "voucher_ttl_seconds": 600, "birthday_only": True}
    after = await api.ok("PATCH", "/api/v1/perks/wash", await api.staff("admin"), json=change)
    assert after | {"updated_at": None} == before | change | {"updated_at": None}
    latest = (await audit_of(api, "perk", "wash"))[0]
    assert (latest["action"], latest["before"], latest["after"]) == ("perk.update", before, after)


async def test_patch_perk_refuses_each_bad_field(api):
    perk = await api.perk("wash")
    cases: list[tuple[Any, ...]] = [
        ({field: None}, field, "must not be null")
        for field in ("name", "category", "voucher_ttl_seconds", "birthday_only")
    ]
    cases += [({"voucher_ttl_seconds": 2_592_001}, "voucher_ttl_seconds"), ({"code": "other"}, "code")]
    await assert_refused(api, "PATCH", "/api/v1/perks/wash", cases)
    assert await api.ok("GET", "/api/v1/perks/wash", await api.staff("admin")) == perk


# Entitlements ---------------------------------------------------------------------------------------------------


async def test_put_entitlement_creates_then_replaces_and_audits_both(api):
    await api.tier("gold")
    await api.perk("wash")
    path = "/api/v1/tiers/gold/entitlements/wash"
    token = await api.staff("operator")
    first = await api.ok("PUT", path, token, json={"yearly_quota": 12, "monthly_cap": 2})
    assert {k: v for k, v in first.items() if k != "updated_at"} == {
        "tier": "gold", "perk": "wash", "yearly_quota": 12, "monthly_cap": 2, "required_tag": None
    }
    second = await api.ok("PUT", path, token, json={"yearly_quota": None, "monthly_cap": None})
    assert (second["yearly_quota"], second["monthly_cap"]) == (None, None)
    listed = await api.ok("GET", "/api/v1/tiers/gold/entitlements", await api.staff("auditor"))
    assert listed == {"items": [second], "next_cursor": None}
    replaced, created = await audit_of(api, "entitlement", "gold/wash")
    assert (created["action"], created["before"], created["after"]) == ("entitlement.put", None, first)
    assert (replaced["action"], replaced["before"], replaced["after"]) == ("entitlement.put", first, second)
    assert (await api.entitle("gold", "wash", 0, 1))["yearly_quota"] == 0


async def test_put_entitlement_refuses_each_bad_field(api):
    await api.tier("gold")
    await api.perk("wash")
    cases = [
        ({"yearly_quota": -1, "monthly_cap": None}, "yearly_quota"),
        ({"yearly_quota": 2**31, "monthly_cap": None}, "yearly_quota"),
        ({"yearly_quota": "5", "monthly_cap": None}, "yearly_quota"),
        ({"yearly_quota": 5.0, "monthly_cap": None}, "yearly_quota"),
        ({"yearly_quota": 5, "monthly_cap": 0}, "monthly_cap"),
        ({"yearly_quota": 5, "monthly_cap": -3}, "monthly_cap"),
        # Leaving a field out is not "unlimited": null must be sent on purpose.
        ({"monthly_cap": 1}, "yearly_quota", "Field required"),
        ({"yearly_quota": 5}, "monthly_cap", "Field required"),
        ({"yearly_quota": 5, "monthly_cap": None, "daily_cap": 1}, "daily_cap", "unknown field"),
    ]
    await assert_refused(api, "PUT", "/api/v1/tiers/gold/entitlements/wash", cases)
    assert await items(api, "/api/v1/tiers/gold/entitlements") == []


async def test_entitlement_of_an_unknown_tier_or_perk_is_404(api):
    await api.tier("gold")
    await api.perk("wash")
    for method in ("PUT", "DELETE"):
        body = {"yearly_quota": 1, "monthly_cap": None} if method == "PUT" else None
        for path in ("/api/v1/tiers/nope/entitlements/wash", "/api/v1/tiers/gold/entitlements/nope"):
            status, answer = await api.call(method, path, await api.staff("admin"), json=body)
            assert (status, answer["error"]["code"]) == (404, "not_found"), (method, path)
    assert await audit_of(api, "entitlement", "gold/nope") == []


async def test_delete_entitlement_withdraws_it_once_and_audits_it(api):
    await api.tier("gold")
    await api.perk("wash")
    granted = await api.entitle("gold", "wash", 3, 1)
    path = "/api/v1/tiers/gold/entitlements/wash"
    assert await api.call("DELETE", path, await api.staff("admin")) == (204, "")
    assert await items(api, "/api/v1/tiers/gold/entitlements") == []
    latest = (await audit_of(api, "entitlement", "gold/wash"))[0]
    assert (latest["action"], latest["before"], latest["after"]) == ("entitlement.delete", granted, None)
    status, _ = await api.call("DELETE", path, await api.staff("admin"))
    assert status == 404


async def test_entitlements_are_listed_by_perk_a_page_at_a_time(api):
    await api.tier("gold")
    await api.tier("silver")
    codes = ["b", "a_1", "a1", "c9", "c"]
    for code in codes:
        await api.perk(code)
        await api.entitle("gold", code, 1)
    await api.entitle("silver", "b", 5)
    pages = await walk(api, "/api/v1/tiers/gold/entitlements", 2)
    assert [e["perk"] for p in pages for e in p] == sorted(codes)
    assert {e["tier"] for p in pages for e in p} == {"gold"}


async def test_the_database_refuses_a_negative_quota_whatever_the_code_does(api, db):
    await api.tier("gold")
    await api.perk("wash")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO entitlements (tier_code, perk_code, yearly_quota) VALUES ('gold', 'wash', -1)")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO entitlements (tier_code, perk_code, monthly_cap) VALUES ('gold', 'wash', 0)")
    await api.entitle("gold", "wash", 2)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE entitlements SET yearly_quota = -1")
    # A caller that skips the HTTP models (an importer, say) meets the same constraint, as a 400 naming the field.
    with pytest.raises(BadRequest) as refused:
        await service.put_entitlement(db, SYSTEM, "gold", "wash", yearly_quota=-1, monthly_cap=None)
    assert refused.value.details == {"fields": {"yearly_quota": "not an allowed value"}}
    assert await db.fetchval("SELECT yearly_quota FROM entitlements") == 2
    assert [e["action"] for e in await audit_of(api, "entitlement", "gold/wash")] == ["entitlement.put"]


async def test_services_refuse_what_the_database_refuses(db):
    with pytest.raises(BadRequest) as refused:
        await service.create_tier(db, SYSTEM, code="Bad Code", name="X", rank=1)
    assert refused.value.details == {"fields": {"code": "not an allowed value"}}
    with pytest.raises(BadRequest) as refused:
        await service.create_perk(db, SYSTEM, code="wash", name="W", category="c", voucher_ttl_seconds=5)
    assert refused.value.details == {"fields": {"voucher_ttl_seconds": "not an allowed value"}}
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0


# Roles ----------------------------------------------------------------------------------------------------------


async def test_staff_read_the_catalogue_and_only_admins_and_operators_change_it(api, db):
    tokens = await role_tokens(api, db)
    expected_actions = ["tier.create", "tier.update", "perk.create", "perk.update", "entitlement.put",
                        "entitlement.delete"]
    for role in ROLES:
        tier, perk, granted = await api.tier(), await api.perk(), await api.perk()
        await api.entitle(tier["code"], granted["code"], 1)
        entitlements = f"/api/v1/tiers/{tier['code']}/entitlements"
        writes = [
            ("POST", "/api/v1/tiers", {"code": unique("t"), "name": "T", "rank": 10**7 + len(role), "min_points": 0}),
            ("PATCH", f"/api/v1/tiers/{tier['code']}", {"name": "Renamed"}),
            ("POST", "/api/v1/perks", {"code": unique("p"), "name": "P", "category": "c"}),
            ("PATCH", f"/api/v1/perks/{perk['code']}", {"name": "Renamed"}),
            ("PUT", f"{entitlements}/{perk['code']}", {"yearly_quota": 1, "monthly_cap": None}),
            ("DELETE", f"{entitlements}/{granted['code']}", None),
        ]
        audited = await db.fetchval("SELECT count(*) FROM audit_log")
        for (method, path, body), success in zip(writes, (201, 200, 201, 200, 200, 204)):
            status, answer = await api.call(method, path, tokens[role], json=body)
            assert status == (success if role in WRITERS else 403), (role, method, path, answer)
            assert status != 403 or answer["error"]["code"] == "forbidden"
        changes = await db.fetch("SELECT action, actor_role FROM audit_log ORDER BY id OFFSET $1", audited)
        expected = [(action, role) for action in expected_actions] if role in WRITERS else []
        assert [(c["action"], c["actor_role"]) for c in changes] == expected, role
        reads = ["/api/v1/tiers", f"/api/v1/tiers/{tier['code']}", "/api/v1/perks", f"/api/v1/perks/{perk['code']}"]
        for path in reads + [entitlements]:
            status, _ = await api.call("GET", path, tokens[role])
            assert status == (200 if role in READERS else 403), (role, path)


async def test_the_catalogue_needs_a_session(api):
    for method, path in [("GET", "/api/v1/tiers"), ("POST", "/api/v1/tiers"), ("GET", "/api/v1/perks/x"),
                         ("PUT", "/api/v1/tiers/a/entitlements/b"), ("DELETE", "/api/v1/tiers/a/entitlements/b")]:
        status, answer = await api.call(method, path, "not-a-token")
        assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, path)
