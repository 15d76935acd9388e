"""Clients: enrolling, reading, listing and changing them — validation, roles, conflicts and the audit trail."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from typing import Any

import pytest

from perks.clients import service
from perks.core.auth import SYSTEM
from perks.core.errors import BadRequest, Conflict
from tests.catalogue.test_catalogue import (
    READERS, ROLES, WRITERS, assert_refused, audit_of, cursor_of, items, role_tokens, walk,
)

CLIENT = {"external_ref": "CN-0001", "name": "罗小升"}
NO_CLIENT = "/api/v1/clients/00000000-0000-4000-8000-000000000000"


async def test_enrol_a_client_with_every_field_and_audit_it(api):
    await api.tier("gold")
    body = CLIENT | {"phone": "+86 138-0000 0000", "birthday": "1990-02-28", "tier": "gold"}
    client = await api.ok("POST", "/api/v1/clients", await api.staff("admin"), 201, json=body)
    assert {k: client[k] for k in body} == body
    assert client["status"] == "active" and client["id"]
    assert await api.ok("GET", f"/api/v1/clients/{client['id']}", await api.staff("auditor")) == client
    [entry] = await audit_of(api, "client", client["id"])
    assert (entry["action"], entry["before"], entry["after"]) == ("client.create", None, client)


async def test_enrol_a_client_with_only_what_is_required(api):
    client = await api.ok("POST", "/api/v1/clients", await api.staff("operator"), 201, json=CLIENT)
    assert (client["phone"], client["birthday"], client["tier"], client["status"]) == (None, None, None, "active")
    assert set(client) == {
        "id", "external_ref", "name", "phone", "birthday", "tier", "status", "created_at", "updated_at",
        "tier_override_until", "tags",
    }


async def test_enrol_refuses_each_bad_field(api):
    bad = [
        ("external_ref", ""), ("external_ref", "has space"), ("external_ref", "x" * 65), ("external_ref", 123),
        ("name", ""), ("name", " \u3000 "), ("name", "x" * 201), ("name", "a\nb"), ("name", None),
        ("phone", "call me"), ("phone", "1" * 33), ("phone", "+-"), ("phone", "12345\n"),
        ("birthday", "1990-02-30"), ("birthday", "28/02/1990"), ("birthday", "1990-02-28T00:00:00"),
        ("birthday", 19900228), ("birthday", "1899-12-31"), ("birthday", "2999-01-01"),
        ("tier", "Gold"), ("tier", 1),
        ("status", "blocked"),  # a client starts active
        ("points", 1),
    ]
    cases: list[tuple[Any, ...]] = [(CLIENT | {field: value}, field) for field, value in bad]
    cases += [(CLIENT | {"tier": "gold"}, "tier", "does not exist")]
    cases += [({k: v for k, v in CLIENT.items() if k != gone}, gone, "Field required") for gone in CLIENT]
    await assert_refused(api, "POST", "/api/v1/clients", cases)
    assert await items(api, "/api/v1/clients") == []


async def test_a_birthday_in_the_future_is_judged_by_the_bank_clock(api, clock):
    # 1 March 00:30 in Shanghai is still 28 February in UTC: the bank's date is what counts.
    clock.set(datetime(2024, 2, 29, 16, 30, tzinfo=timezone.utc))
    body = CLIENT | {"birthday": "2024-03-01"}
    client = await api.ok("POST", "/api/v1/clients", await api.staff("operator"), 201, json=body)
    future = ({"birthday": "2024-03-02"}, "birthday", "must not be in the future")
    await assert_refused(api, "PATCH", f"/api/v1/clients/{client['id']}", [future])


async def test_a_taken_external_ref_is_409(api):
    await api.new_client(external_ref="CN-0001")
    status, answer = await api.call("POST", "/api/v1/clients", await api.staff("admin"), json=CLIENT)
    assert status == 409
    assert answer["error"]["code"] == "conflict"
    assert answer["error"]["details"] == {"fields": {"external_ref": "already taken"}}


async def test_racing_to_enrol_one_external_ref_gives_one_client_and_409s(api):
    token = await api.staff("operator")
    answers = await asyncio.gather(*(api.call("POST", "/api/v1/clients", token, json=CLIENT) for _ in range(8)))
    assert sorted(status for status, _ in answers) == [201] + [409] * 7
    assert len(await items(api, "/api/v1/clients")) == 1


async def test_an_unknown_client_is_404(api):
    for path in (NO_CLIENT, "/api/v1/clients/not-an-id"):
        for method, body in [("GET", None), ("PATCH", {"status": "blocked"})]:
            status, answer = await api.call(method, path, await api.staff("admin"), json=body)
            assert (status, answer["error"]["code"]) == (404, "not_found"), (method, path)


async def test_clients_are_listed_oldest_first_a_page_at_a_time(api):
    made = [await api.new_client() for _ in range(5)]
    pages = await walk(api, "/api/v1/clients", 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c["id"] for p in pages for c in p] == [c["id"] for c in made]


async def test_clients_can_be_found_by_external_ref_tier_and_status(api):
    await api.tier("gold")
    gold = await api.new_client(tier="gold", external_ref="G-1")
    plain = await api.new_client(external_ref="P-1")
    await api.ok("PATCH", f"/api/v1/clients/{plain['id']}", await api.staff("admin"), json={"status": "blocked"})
    token = await api.staff("auditor")

    async def found(query: str) -> list[str]:
        return [c["external_ref"] for c in (await api.ok("GET", f"/api/v1/clients?{query}", token))["items"]]

    assert await found("external_ref=G-1") == ["G-1"]
    assert await found("external_ref=nobody") == []
    assert await found("tier=gold") == ["G-1"]
    assert await found("status=blocked") == ["P-1"]
    assert await found("status=active&tier=gold") == [gold["external_ref"]]


async def test_a_bad_list_query_is_400(api):
    wrong = []
    for query in [
        "cursor=%%%",
        f"cursor={cursor_of(['x'])}",
        f"cursor={cursor_of(['not a time', 'not an id'])}",
        "limit=0",
        "limit=501",
        "status=gone",
        "tier=GOLD",
        "external_ref=" + "x" * 65,
    ]:
        status, answer = await api.call("GET", f"/api/v1/clients?{query}", await api.staff("admin"))
        if status != 400 or query.partition("=")[0] not in answer["error"]["details"]["fields"]:
            wrong.append((query, status, answer))
    assert not wrong, wrong


async def test_patch_client_changes_what_is_sent_and_audits_it(api):
    await api.tier("gold")
    await api.tier("silver")
    before = await api.new_client(tier="silver", phone="123456", birthday="1980-01-01")
    path = f"/api/v1/clients/{before['id']}"
    change = {"tier": "gold", "status": "blocked", "name": "罗升", "phone": None, "birthday": None}
    after = await api.ok("PATCH", path, await api.staff("operator"), json=change)
    assert after | {"updated_at": None} == before | change | {"updated_at": None}
    assert after["updated_at"] > before["updated_at"]
    latest = (await audit_of(api, "client", before["id"]))[0]
    assert (latest["action"], latest["before"], latest["after"]) == ("client.update", before, after)
    assert await api.ok("GET", path, await api.staff("auditor")) == after


async def test_patch_client_tier_to_null_means_no_tier_and_back(api):
    await api.tier("gold")
    client = await api.new_client(tier="gold")
    path = f"/api/v1/clients/{client['id']}"
    token = await api.staff("admin")
    assert (await api.ok("PATCH", path, token, json={"tier": None}))["tier"] is None
    assert (await api.ok("PATCH", path, token, json={"tier": "gold", "status": "active"}))["tier"] == "gold"
    actions = [e["action"] for e in await audit_of(api, "client", client["id"])]
    assert actions == ["client.update", "client.update", "client.create"]


async def test_patch_client_that_changes_nothing_writes_nothing(api):
    client = await api.new_client()
    for body in ({}, {"status": "active", "name": "罗小升"}):
        assert await api.ok("PATCH", f"/api/v1/clients/{client['id']}", await api.staff("admin"), json=body) == client
    assert [e["action"] for e in await audit_of(api, "client", client["id"])] == ["client.create"]


async def test_patch_client_refuses_each_bad_field(api):
    client = await api.new_client()
    cases = [
        ({"name": None}, "name", "must not be null"),
        ({"status": None}, "status", "must not be null"),
        ({"status": "deleted"}, "status"),
        ({"tier": "nope"}, "tier", "does not exist"),
        ({"tier": "NOPE"}, "tier"),
        ({"birthday": "1990-13-01"}, "birthday"),
        ({"phone": "phone"}, "phone"),
        ({"external_ref": "CN-0002"}, "external_ref", "unknown field"),
    ]
    await assert_refused(api, "PATCH", f"/api/v1/clients/{client['id']}", cases)
    assert await api.ok("GET", f"/api/v1/clients/{client['id']}", await api.staff("admin")) == client


async def test_the_service_can_be_called_directly(db):
    """As an importer or the demo seeder would: the same rules, the same audit trail."""
    tier = await db.fetchval("INSERT INTO tiers (code, name, rank) VALUES ('gold', 'Gold', 1) RETURNING code")
    client = await service.create_client(db, SYSTEM, external_ref="IMP-1", name="Ann", tier=tier)
    with pytest.raises(Conflict):
        await service.create_client(db, SYSTEM, external_ref="IMP-1", name="Bob")
    with pytest.raises(BadRequest) as refused:
        await service.create_client(db, SYSTEM, external_ref="IMP-2", name="Bob", tier="silver")
    assert refused.value.details == {"fields": {"tier": "does not exist"}}
    with pytest.raises(BadRequest) as refused:
        await service.update_client(db, SYSTEM, client["id"], name=None)
    assert refused.value.details == {"fields": {"name": "must not be null"}}
    with pytest.raises(BadRequest) as refused:
        await service.update_client(db, SYSTEM, client["id"], birthday=date(2024, 1, 2), today=date(2024, 1, 1))
    assert refused.value.details == {"fields": {"birthday": "must not be in the future"}}
    assert (await service.update_client(db, SYSTEM, client["id"], status="blocked"))["status"] == "blocked"
    actions = [(a["action"], a["actor_role"]) for a in await db.fetch("SELECT * FROM audit_log ORDER BY id")]
    assert actions == [("client.create", "system"), ("client.update", "system")]


async def test_staff_read_clients_and_only_admins_and_operators_change_them(api, db):
    tokens = await role_tokens(api, db)
    for role in ROLES:
        client = await api.new_client()
        audited = await db.fetchval("SELECT count(*) FROM audit_log")
        status, answer = await api.call("POST", "/api/v1/clients", tokens[role], json=CLIENT | {"external_ref": role})
        assert status == (201 if role in WRITERS else 403), (role, answer)
        path = f"/api/v1/clients/{client['id']}"
        status, answer = await api.call("PATCH", path, tokens[role], json={"status": "blocked"})
        assert status == (200 if role in WRITERS else 403), (role, answer)
        changes = await db.fetch("SELECT action, actor_role FROM audit_log ORDER BY id OFFSET $1", audited)
        expected = [("client.create", role), ("client.update", role)] if role in WRITERS else []
        assert [(c["action"], c["actor_role"]) for c in changes] == expected, role
        for read in ("/api/v1/clients", path, f"/api/v1/clients?external_ref={client['external_ref']}"):
            status, answer = await api.call("GET", read, tokens[role])
            assert status == (200 if role in READERS else 403), (role, read, answer)
            assert status != 403 or answer["error"]["code"] == "forbidden"


async def test_clients_need_a_session(api):
    for method, path in [("GET", "/api/v1/clients"), ("POST", "/api/v1/clients"), ("GET", NO_CLIENT),
                         ("PATCH", NO_CLIENT)]:
        status, answer = await api.call(method, path)
        assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, path)
