"""Idempotency-Key: one key, one outcome per merchant for 24 hours; replays say so; other bodies are refused."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

REDEEM = "/api/v1/merchant/redemptions"


@pytest.fixture
def config(config):
    """Sessions long enough to outlast the clock's jump past the 24-hour window."""
    return dataclasses.replace(config, session_ttl_seconds=7 * 86400, client_session_ttl_seconds=7 * 86400)


@pytest.fixture
async def prog(api):
    return await api.program(yearly_quota=5)


async def post(api, token, body, key=None):
    """``(status, body, headers)`` of a redemption request."""
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with api.client.post(REDEEM, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


async def test_the_same_key_and_body_replay_the_first_response(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    request = {"token": voucher["token"]}

    status, first, headers = await post(api, prog["cashier"], request, key="k-1")
    assert status == 201, first
    assert "Idempotent-Replayed" not in headers

    for _ in range(2):
        status, again, headers = await post(api, prog["cashier"], request, key="k-1")
        assert status == 201
        assert again == first
        assert headers["Idempotent-Replayed"] == "true"
    # An omitted store_id and an explicit null are the same request.
    status, again, headers = await post(api, prog["manager"], {**request, "store_id": None}, key="k-1")
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")

    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 1
    assert await api.counter_mismatches() == []


async def test_the_same_key_with_another_body_is_422(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await post(api, prog["cashier"], {"token": voucher["token"]}, key="k-2"))[0] == 201

    for body in ({"token": "something else"}, {"token": voucher["token"], "store_id": prog["store"]}):
        status, error, headers = await post(api, prog["cashier"], body, key="k-2")
        assert status == 422 and error["error"]["code"] == "idempotency_key_reused", error
        assert "Idempotent-Replayed" not in headers
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 1


async def test_keys_belong_to_one_merchant(api, prog):
    other = await api.program(yearly_quota=5)
    _, session = await api.member(prog["tier"])
    mine = await api.voucher(session, prog["perk"])
    _, session = await api.member(other["tier"])
    theirs = await api.voucher(session, other["perk"])

    assert (await post(api, prog["cashier"], {"token": mine["token"]}, key="shared"))[0] == 201
    status, body, headers = await post(api, other["cashier"], {"token": theirs["token"]}, key="shared")
    assert status == 201 and body["voucher_id"] == theirs["id"], body
    assert "Idempotent-Replayed" not in headers


async def test_a_refusal_is_kept_and_replayed_too(api, prog):
    client, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    operator = await api.staff("operator")
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"status": "blocked"})

    status, first, _ = await post(api, prog["cashier"], {"token": voucher["token"]}, key="k-3")
    assert status == 403 and first["error"]["code"] == "client_blocked", first

    # The cause is gone, but this key's outcome is decided: retrying means a new key.
    await api.ok("PATCH", f"/api/v1/clients/{client['id']}", operator, json={"status": "active"})
    status, again, headers = await post(api, prog["cashier"], {"token": voucher["token"]}, key="k-3")
    assert (status, again, headers["Idempotent-Replayed"]) == (403, first, "true")
    status, body, _ = await post(api, prog["cashier"], {"token": voucher["token"]}, key="k-4")
    assert status == 201, body
    assert await api.counter_mismatches() == []


async def test_errors_that_decide_nothing_are_not_kept(api, prog):
    second = await api.store(prog["merchant"])
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])

    status, body, _ = await post(api, prog["cashier"], {"token": voucher["token"], "store_id": second["id"]}, key="k-5")
    assert status == 403, body
    status, body, _ = await post(api, prog["manager"], {"token": voucher["token"]}, key="k-6")
    assert status == 400 and "store_id" in body["error"]["details"]["fields"], body
    assert await api.db.fetchval("SELECT count(*) FROM idempotency_keys") == 0

    status, body, headers = await post(api, prog["manager"], {"token": voucher["token"], "store_id": second["id"]}, key="k-6")
    assert status == 201 and "Idempotent-Replayed" not in headers, body


async def test_a_key_expires_after_24_hours(api, prog, clock):
    clock.set(clock.now())
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    request = {"token": voucher["token"]}
    assert (await post(api, prog["cashier"], request, key="k-7"))[0] == 201

    clock.advance(hours=23, minutes=59)
    status, _, headers = await post(api, prog["cashier"], request, key="k-7")
    assert (status, headers.get("Idempotent-Replayed")) == (201, "true")

    clock.advance(minutes=2)
    status, body, headers = await post(api, prog["cashier"], request, key="k-7")
    assert status == 410 and body["error"]["code"] == "token_expired", body
    assert "Idempotent-Replayed" not in headers
    assert await api.db.fetchval("SELECT count(*) FROM idempotency_keys") == 1


@pytest.mark.parametrize("key", ["", "x" * 256])
async def test_a_key_must_be_1_to_255_characters(api, prog, key):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    status, body, _ = await post(api, prog["cashier"], {"token": voucher["token"]}, key=key)
    assert status == 400 and "Idempotency-Key" in body["error"]["details"]["fields"], body
    status, body, _ = await post(api, prog["cashier"], {"token": voucher["token"]}, key="y" * 255)
    assert status == 201, body


async def test_requests_without_a_key_keep_nothing(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 201
    assert (await api.redeem(prog["cashier"], voucher["token"]))[0] == 409
    assert await api.db.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_twenty_concurrent_requests_with_one_key_redeem_once(api, prog, client):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    request = {"token": voucher["token"]}

    results = await asyncio.gather(*(post(api, prog["cashier"], request, key="storm") for _ in range(20)))

    assert [status for status, _, _ in results] == [201] * 20
    bodies = [body for _, body, _ in results]
    assert all(body == bodies[0] for body in bodies)
    replayed = [headers.get("Idempotent-Replayed") for _, _, headers in results]
    assert sorted(replayed, key=str) == [None] + ["true"] * 19
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 1
    assert await api.counter_mismatches() == []
    async with client.get("/metrics") as response:
        text = await response.text()
    assert 'perks_redemptions_total{outcome="redeemed"} 1.0' in text
    assert 'perks_redemptions_total{outcome="replayed"} 19.0' in text


async def test_concurrent_requests_with_one_key_and_different_bodies(api, prog):
    _, session = await api.member(prog["tier"])
    voucher = await api.voucher(session, prog["perk"])
    bodies = [{"token": voucher["token"]}, {"token": voucher["token"], "store_id": prog["store"]}] * 5

    results = await asyncio.gather(*(post(api, prog["cashier"], body, key="mixed") for body in bodies))

    # Whichever came first decides; the other body is refused, its own twins replayed.
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * 5 + [422] * 5
    assert await api.db.fetchval("SELECT count(*) FROM redemptions") == 1


async def test_housekeeping_deletes_only_keys_past_their_replay_window(client, db, clock):
    from datetime import datetime, timedelta, timezone

    from perks.housekeeping import sweep

    merchant_id = await db.fetchval("INSERT INTO merchants (name, category) VALUES ('m', 'c') RETURNING id")
    now = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
    clock.set(now)
    for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
        await db.execute(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created_at)"
            " VALUES ($1, $2, '\\x00', 201, '{}', $3)",
            merchant_id, key, now - age,
        )
    await sweep(client.app)
    assert [r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")] == ["fresh"]
