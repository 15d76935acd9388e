"""The demo program: seeded through the services, idempotent, and its printed logins work."""

from __future__ import annotations

from perks.demo import demo_password, seed_demo

COUNTED = ("tiers", "perks", "entitlements", "merchants", "stores", "agreements", "users", "clients", "audit_log")


async def _counts(db) -> dict[str, int]:
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in COUNTED}


async def test_demo_seeds_a_program_once(api, db, config):
    summary = await seed_demo(db, config, clients=40)
    first = await _counts(db)
    assert first["clients"] == 40
    assert first["merchants"] == 4
    assert first["tiers"] == 4

    again = await seed_demo(db, config, clients=40)
    assert await _counts(db) == first
    assert again.first_client_id == summary.first_client_id


async def test_demo_logins_work_and_the_loop_runs(api, db, config):
    summary = await seed_demo(db, config, clients=5)
    for username, password, _ in summary.logins:
        assert password == demo_password(username)
        status, body = await api.call("POST", "/api/v1/auth/token", json={"username": username, "password": password})
        assert status == 200, (username, body)

    admin = await api.login("admin", demo_password("admin"))
    client = await api.ok("GET", "/api/v1/clients?external_ref=DEMO0001", admin)
    assert client["items"][0]["tier"] == "gold"
    session = await api.ok("POST", f"/api/v1/clients/{summary.first_client_id}/sessions", admin, 201)
    voucher = await api.ok("POST", "/api/v1/me/vouchers", session["access_token"], 201, json={"perk": "car_wash"})
    cashier = await api.login("cashier1", demo_password("cashier1"))
    redeemed = await api.ok("POST", "/api/v1/merchant/redemptions", cashier, 201, json={"token": voucher["token"]})
    assert redeemed["status"] == "redeemed"
    assert redeemed["client_remaining"] == 5
