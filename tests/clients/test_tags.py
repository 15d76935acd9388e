"""Segments: client tags through the API and the CSV import, the ?tag= filter, required_tag on entitlements."""

from __future__ import annotations

import io

import pytest

from tests.webhook_support import fast_config


@pytest.fixture
def config(config):
    return fast_config(config, webhook_enabled="0")


def tags_path(client):
    return f"/api/v1/clients/{client['id']}/tags"


async def post_csv(api, text: str):
    return await api.call("POST", "/api/v1/clients/import", await api.staff("operator"),
                          data=io.BytesIO(text.encode()), headers={"Content-Type": "text/csv"})


async def test_put_tags_replaces_merges_repeats_and_is_audited(api):
    client = await api.new_client()
    assert client["tags"] == []
    operator = await api.staff("operator")
    tagged = await api.ok("PUT", tags_path(client), operator, json={"tags": ["car_owner", "parent", "car_owner"]})
    assert tagged["tags"] == ["car_owner", "parent"]
    assert (await api.ok("GET", f"/api/v1/clients/{client['id']}", operator))["tags"] == ["car_owner", "parent"]
    again = await api.ok("PUT", tags_path(client), await api.staff("admin"), json={"tags": ["parent", "car_owner", "parent"]})
    assert again["tags"] == ["parent", "car_owner"]
    cleared = await api.ok("PUT", tags_path(client), operator, json={"tags": []})
    assert cleared["tags"] == []
    unchanged = await api.ok("PUT", tags_path(client), operator, json={"tags": []})
    assert unchanged["tags"] == []
    entries = await api.audit_entries(entity_type="client", entity_id=client["id"])
    assert [entry["action"] for entry in entries] == ["client.tags", "client.tags", "client.tags", "client.create"]
    assert entries[2]["before"]["tags"] == [] and entries[2]["after"]["tags"] == ["car_owner", "parent"]


@pytest.mark.parametrize("payload, field", [
    ({"tags": ["Car"]}, "tags.0"), ({"tags": ["a" * 33]}, "tags.0"), ({"tags": [""]}, "tags.0"),
    ({"tags": "car_owner"}, "tags"), ({"tags": [f"t{n}" for n in range(33)]}, "tags"), ({}, "tags"),
    ({"tags": [], "other": 1}, "other"),
])
async def test_put_tags_refuses_bad_tags(api, payload, field):
    client = await api.new_client()
    status, body = await api.call("PUT", tags_path(client), await api.staff("operator"), json=payload)
    assert status == 400 and field in body["error"]["details"]["fields"], body


async def test_thirty_two_tags_is_the_limit_after_merging_repeats(api):
    client = await api.new_client()
    tags = [f"t{n}" for n in range(32)]
    body = await api.ok("PUT", tags_path(client), await api.staff("operator"), json={"tags": tags + tags[:5]})
    assert body["tags"] == tags


async def test_put_tags_roles_and_unknown_client(api):
    client = await api.new_client()
    merchant = await api.merchant()
    _, manager = await api.merchant_user(merchant["id"], "manager")
    for token in (await api.staff("auditor"), manager, await api.client_session(client["id"])):
        status, _ = await api.call("PUT", tags_path(client), token, json={"tags": ["x"]})
        assert status == 403
    status, _ = await api.call("PUT", "/api/v1/clients/00000000-0000-0000-0000-000000000000/tags",
                               await api.staff("operator"), json={"tags": ["x"]})
    assert status == 404


async def test_list_clients_by_tag(api):
    operator = await api.staff("operator")
    owners = [await api.new_client() for _ in range(3)]
    other = await api.new_client()
    for client in owners:
        await api.ok("PUT", tags_path(client), operator, json={"tags": ["car_owner", "vip"]})
    await api.ok("PUT", tags_path(other), operator, json={"tags": ["parent"]})
    auditor = await api.staff("auditor")
    first = await api.ok("GET", "/api/v1/clients", auditor, params={"tag": "car_owner", "limit": "2"})
    rest = await api.ok("GET", "/api/v1/clients", auditor, params={"tag": "car_owner", "cursor": first["next_cursor"]})
    assert [c["id"] for c in first["items"] + rest["items"]] == [c["id"] for c in owners]
    parents = await api.ok("GET", "/api/v1/clients", auditor, params={"tag": "parent"})
    assert [c["id"] for c in parents["items"]] == [other["id"]]
    none = await api.ok("GET", "/api/v1/clients", auditor, params={"tag": "nobody"})
    assert none["items"] == []
    status, body = await api.call("GET", "/api/v1/clients", auditor, params={"tag": "Bad Tag"})
    assert status == 400 and "tag" in body["error"]["details"]["fields"]


async def test_import_sets_tags_keeps_them_on_empty_cells_and_refuses_bad_ones(api, db):
    status, body = await post_csv(api, "external_ref,name,tags\nT1,Ann,car_owner;parent\nT2,Bob,\n")
    assert status == 200 and body["created"] == 2, body
    auditor = await api.staff("auditor")

    async def tags_of(ref):
        items = (await api.ok("GET", "/api/v1/clients", auditor, params={"external_ref": ref}))["items"]
        return items[0]["tags"]

    assert await tags_of("T1") == ["car_owner", "parent"] and await tags_of("T2") == []
    status, body = await post_csv(api, "external_ref,name,tags\nT1,Ann,\nT2,Bob, vip ; vip;\n")
    assert status == 200 and body == {"received": 2, "created": 0, "updated": 1, "unchanged": 1}, body
    assert await tags_of("T1") == ["car_owner", "parent"] and await tags_of("T2") == ["vip"]
    [entry, _] = await api.audit_entries(entity_type="client", entity_id=(await _id(api, "T2")))
    assert entry["before"]["tags"] == [] and entry["after"]["tags"] == ["vip"]

    many = ";".join(f"t{n}" for n in range(33))
    status, body = await post_csv(api, f"external_ref,name,tags\nT1,Ann,Car-Owner\nT3,Cy,ok\nT4,Di,{many}\n")
    assert status == 400
    errors = body["error"]["details"]["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(2, "tags"), (4, "tags")]
    assert await tags_of("T1") == ["car_owner", "parent"]
    assert await db.fetchval("SELECT count(*) FROM clients WHERE external_ref = 'T3'") == 0


async def _id(api, ref):
    items = (await api.ok("GET", "/api/v1/clients", await api.staff("auditor"), params={"external_ref": ref}))["items"]
    return items[0]["id"]


async def test_required_tag_on_an_entitlement(api):
    tier, perk = await api.tier(), await api.perk()
    path = f"/api/v1/tiers/{tier['code']}/entitlements/{perk['code']}"
    operator = await api.staff("operator")
    put = await api.ok("PUT", path, operator, json={"yearly_quota": 6, "monthly_cap": None, "required_tag": "car_owner"})
    assert put["required_tag"] == "car_owner"
    listed = await api.ok("GET", f"/api/v1/tiers/{tier['code']}/entitlements", await api.staff("auditor"))
    assert [item["required_tag"] for item in listed["items"]] == ["car_owner"]
    cleared = await api.ok("PUT", path, operator, json={"yearly_quota": 6, "monthly_cap": None, "required_tag": None})
    assert cleared["required_tag"] is None
    left_out = await api.ok("PUT", path, operator, json={"yearly_quota": 6, "monthly_cap": None})
    assert left_out["required_tag"] is None
    for bad in ("Car", "", "x" * 33, 5):
        status, body = await api.call("PUT", path, operator,
                                      json={"yearly_quota": 6, "monthly_cap": None, "required_tag": bad})
        assert status == 400 and "required_tag" in body["error"]["details"]["fields"], bad
    entries = await api.audit_entries(entity_type="entitlement", entity_id=f"{tier['code']}/{perk['code']}")
    assert entries[-1]["after"]["required_tag"] == "car_owner" and entries[-2]["after"]["required_tag"] is None


async def test_a_manual_tier_change_writes_a_tier_changed_event(api, db):
    silver, gold = await api.tier(), await api.tier()
    client = await api.new_client(tier=silver["code"])
    operator = await api.staff("operator")
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"tier": gold["code"]})
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"name": "罗升"})
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator,
                 json={"tier": silver["code"], "tier_override_until": "2099-01-01T00:00:00+08:00"})
    rows = await db.fetch("SELECT type, data FROM events ORDER BY id")
    assert [row["data"] for row in rows if row["type"] == "client.tier_changed"] == [
        {"client_id": client["id"], "from_tier": silver["code"], "to_tier": gold["code"], "cause": "manual"},
        {"client_id": client["id"], "from_tier": gold["code"], "to_tier": silver["code"], "cause": "manual"},
    ]


async def test_quota_use_report_by_tag(api, db):
    program = await api.program(yearly_quota=5)
    operator = await api.staff("operator")
    owner, owner_token = await api.member(program["tier"])
    both, both_token = await api.member(program["tier"])
    await api.member(program["tier"])  # untagged: counted nowhere
    await api.ok("PUT", tags_path(owner), operator, json={"tags": ["car_owner"]})
    await api.ok("PUT", tags_path(both), operator, json={"tags": ["car_owner", "parent"]})
    for token in (owner_token, owner_token, both_token):
        voucher = await api.voucher(token, program["perk"])
        status, body = await api.redeem(program["cashier"], voucher["token"])
        assert status == 201, body
    reserved = await api.perk()
    await api.ok("PUT", f"/api/v1/tiers/{program['tier']}/entitlements/{reserved['code']}", operator,
                 json={"yearly_quota": 1, "monthly_cap": None, "required_tag": "student"})
    year = (await db.fetchval("SELECT quota_year FROM redemptions LIMIT 1"))
    report = await api.ok("GET", "/api/v1/reports/quota-use/by-tag", await api.staff("auditor"),
                          params={"year": str(year)})
    assert report["year"] == year
    assert [(i["tag"], i["perk"], i["clients"], i["used"], i["clients_using"]) for i in report["items"]] == [
        ("car_owner", program["perk"], 2, 3, 2),
        ("parent", program["perk"], 1, 1, 1),
        ("student", reserved["code"], 0, 0, 0),
    ]
    status, text = await api.call("GET", "/api/v1/reports/quota-use/by-tag", await api.staff("auditor"),
                                  params={"year": str(year), "format": "csv"})
    assert status == 200 and "tag,perk,perk_name,clients,used,clients_using" in text
    merchant_status, _ = await api.call("GET", "/api/v1/reports/quota-use/by-tag", program["manager"])
    assert merchant_status == 403


async def test_an_import_that_moves_tiers_writes_tier_changed_events(api, db):
    silver, gold = await api.tier(), await api.tier()
    status, body = await post_csv(api, f"external_ref,name,tier\nM1,Ann,{silver['code']}\nM2,Bob,{silver['code']}\n")
    assert status == 200, body
    assert await db.fetchval("SELECT count(*) FROM events") == 0  # enrolling is no tier change
    status, body = await post_csv(api, f"external_ref,name,tier\nM1,Ann,{gold['code']}\nM2,Bob,\n")
    assert status == 200 and body["updated"] == 1, body
    m1 = await _id(api, "M1")
    rows = await db.fetch("SELECT type, data FROM events")
    assert [(row["type"], row["data"]) for row in rows] == [
        ("client.tier_changed", {"client_id": m1, "from_tier": silver["code"], "to_tier": gold["code"],
                                 "cause": "manual"}),
    ]
