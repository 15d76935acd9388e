"""No authorization hole, table-driven over the served OpenAPI document: every operation × the six roles.

Each operation's documented roles ("Roles: ..." in its description) are the only ones that get past 403; a
merchant user or a client reaching another merchant's or client's object gets 403 or 404, never a success. The
controls: the object's own merchant or client is served (so the ids in the paths are real ones)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import uuid4

import pytest

from perks.core.auth import ALL_ROLES
from tests.support import PASSWORD, unique

ROLES_LINE = re.compile(r"Roles: ([a-z, ]+)\.")
# Bodies that would succeed if a scope check were missing: a refusal then proves the check, not a bad body.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/v1/merchants/{merchant_id}/users"): {"password": PASSWORD, "role": "manager"},
    ("patch", "/api/v1/merchants/{merchant_id}/users/{user_id}"): {"status": "disabled"},
    ("post", "/api/v1/merchant/redemptions/{redemption_id}/void"): {"reason": "not ours"},
    ("post", "/api/v1/me/redemptions/{redemption_id}/feedback"): {"rating": 1},
}
# Parameters that name an object belonging to one merchant or one client.
SCOPED = {"merchant_id", "client_id", "user_id", "store_id", "redemption_id", "voucher_id"}


@pytest.fixture
async def world(api) -> dict[str, Any]:
    """Merchant A with its users, a client of A's program with a voucher and a redemption; merchant B's users and
    client B, the outsiders; a staff user to address."""
    a = await api.program(yearly_quota=5, yearly_capacity=10)
    cashier_a, _ = await api.merchant_user(a["merchant"], "cashier", a["store"])
    client_a, client_a_token = await api.member(a["tier"])
    redeemed = await api.voucher(client_a_token, a["perk"])
    status, redemption = await api.redeem(a["cashier"], redeemed["token"])
    assert status == 201
    voucher = await api.voucher(client_a_token, a["perk"])
    b = await api.program()
    client_b, client_b_token = await api.member(b["tier"])
    staff_user = await api.ok(
        "POST", "/api/v1/staff", await api.staff("admin"), 201,
        json={"username": unique("victim"), "password": PASSWORD, "role": "auditor"},
    )
    month = datetime.now().strftime("%Y-%m")
    params = {
        "merchant_id": a["merchant"], "store_id": a["store"], "client_id": client_a["id"], "tier": a["tier"],
        "perk": a["perk"], "voucher_id": voucher["id"], "redemption_id": redemption["id"], "month": month,
        "source": "card_spend", "user_id": cashier_a["id"],
        # Bank-side objects only: every merchant user and client is refused by role before the id is read.
        "grant_id": str(uuid4()), "webhook_id": str(uuid4()), "delivery_id": str(uuid4()),
    }
    outsiders = {
        "admin": await api.staff("admin"), "operator": await api.staff("operator"),
        "auditor": await api.staff("auditor"), "manager": b["manager"], "cashier": b["cashier"],
        "client": client_b_token,
    }
    owners = {"manager": a["manager"], "cashier": a["cashier"], "client": client_a_token}
    return {"params": params, "outsiders": outsiders, "owners": owners, "staff_user": staff_user["id"]}


async def _call(api, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """``(status, JSON body or None)``: a success may be an image, which is not text."""
    headers = {"Authorization": f"Bearer {token}"}
    async with api.client.request(method.upper(), path, headers=headers, json=body) as response:
        answer = await response.json() if response.content_type == "application/json" else None
        return response.status, answer


def _operations(document: dict[str, Any]) -> list[tuple[str, str, frozenset[str]]]:
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            roles = ROLES_LINE.search(op.get("description", ""))
            if roles:
                found.append((method, path, frozenset(r.strip() for r in roles.group(1).split(","))))
    return found


def _fill(path: str, world: dict[str, Any]) -> str:
    params = dict(world["params"])
    if path.startswith("/api/v1/staff/"):
        params["user_id"] = world["staff_user"]
    if path.startswith("/api/v1/tiers/{code}"):
        params["code"] = params["tier"]
    if path.startswith("/api/v1/perks/{code}"):
        params["code"] = params["perk"]
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)


async def test_every_operation_and_role_is_allowed_or_refused_never_let_through(api, world):
    document = await api.ok("GET", "/api/openapi.json", None)
    operations = _operations(document)
    assert len(operations) >= 61
    checked = 0
    for method, template, roles in operations:
        assert roles <= ALL_ROLES and roles, (method, template)
        path = _fill(template, world)
        names = set(re.findall(r"\{(\w+)\}", template))
        body = dict(BODIES.get((method, template), {}))
        if "username" not in body and (method, template) == ("post", "/api/v1/merchants/{merchant_id}/users"):
            body["username"] = unique("intruder")
        for role, token in world["outsiders"].items():
            if role in roles and (role in ("admin", "operator", "auditor") or not names & SCOPED):
                continue  # allowed, and on its own objects: nothing to refuse
            status, answer = await _call(api, method, path, token, body if method != "get" else None)
            where = (method, template, role, status, answer if status >= 500 or status < 400 else "")
            if role not in roles:
                assert status == 403 and answer["error"]["code"] == "forbidden", where
            else:
                assert status in (403, 404), where
            checked += 1
    assert checked >= 61 * 3


async def test_the_controls_owners_reach_their_own_objects(api, world):
    # Without these, a 404 above could come from a wrong id rather than from a scope check.
    document = await api.ok("GET", "/api/openapi.json", None)
    served = 0
    for method, template, roles in _operations(document):
        names = set(re.findall(r"\{(\w+)\}", template))
        if method != "get" or not names & SCOPED:
            continue
        for role, token in world["owners"].items():
            if role in roles:
                status, answer = await _call(api, "GET", _fill(template, world), token)
                assert status == 200, (template, role, status, answer)
                served += 1
    assert served >= 8


async def test_a_revoked_token_is_refused_by_every_operation(api, world, db):
    # The session check sits in the one decorator every operation goes through: a disabled manager's token is 401
    # everywhere, before any role or body is looked at.
    manager = world["owners"]["manager"]
    merchant_id = world["params"]["merchant_id"]
    manager_id = await db.fetchval("SELECT id::text FROM users WHERE role = 'manager' AND merchant_id = $1::text::uuid", merchant_id)
    path = f"/api/v1/merchants/{merchant_id}/users/{manager_id}"
    await api.ok("PATCH", path, await api.staff("operator"), json={"status": "disabled"})
    document = await api.ok("GET", "/api/openapi.json", None)
    for method, template, _ in _operations(document):
        status, answer = await _call(api, method, _fill(template, world), manager, {})
        assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, template)
