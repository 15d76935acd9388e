"""Webhooks end to end: a real receiver on its own port, signed deliveries, retries, order, two dispatchers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from perks.app import create_app
from perks.core.db import connect
from perks.events.service import record_event
from perks.webhooks.dispatcher import DISPATCHER
from tests.webhook_support import Receiver, eventually, fast_config

WEBHOOKS = "/api/v1/webhooks"


@pytest.fixture
def config(config):
    """The suite's configuration with the dispatcher's time compressed."""
    return fast_config(config)


@pytest.fixture
async def receiver():
    recv = Receiver()
    await recv.start()
    yield recv
    await recv.stop()


async def subscribe(api, url, types=("merchant.suspended",), **fields):
    body = {"url": url, "event_types": list(types)} | fields
    return await api.ok("POST", WEBHOOKS, await api.staff("admin"), 201, json=body)


async def emit(db, count=1, type="merchant.suspended"):
    """``count`` events, each in its own committed transaction (as changes write them)."""
    ids = []
    for n in range(count):
        async with db.transaction():
            ids.append(str(await record_event(db, type, datetime.now(timezone.utc), {"merchant_id": f"m{n}", "name": "x"})))
    return ids


async def deliveries(api, hook_id, **params):
    body = await api.ok("GET", f"{WEBHOOKS}/{hook_id}/deliveries", await api.staff("admin"), params=params)
    return body["items"]


def documented_verify():
    """The receiver's ``verify`` exactly as docs/events.md prints it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)
    return namespace["verify"]


def verify_as_documented(secret: str, headers: dict, body: bytes, now: float) -> bool:
    """The receiver's check from docs/events.md, written out independently of perks' own code."""
    timestamp = headers["Perks-Timestamp"]
    if abs(now - int(timestamp)) > 300:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    given = [part.strip().removeprefix("v1=") for part in headers["Perks-Signature"].split(",")]
    return any(hmac.compare_digest(expected, value) for value in given)


async def test_a_suspension_is_delivered_signed_and_the_receiver_verifies_it(api, receiver):
    hook = await subscribe(api, receiver.url)
    assert hook["status"] == "active" and hook["secret"].startswith("whsec_")
    merchant = await api.merchant()
    await api.ok("PATCH", f"/api/v1/merchants/{merchant['id']}", await api.staff("operator"),
                 json={"status": "suspended"})
    await eventually(lambda: len(receiver.received) == 1)
    item = receiver.received[0]
    assert verify_as_documented(hook["secret"], item["headers"], item["body"], time.time())
    assert not verify_as_documented("whsec_wrong", item["headers"], item["body"], time.time())
    assert not verify_as_documented(hook["secret"], item["headers"], item["body"], time.time() + 301)
    verify = documented_verify()
    assert verify(hook["secret"], item["headers"], item["body"])
    assert not verify(hook["secret"], item["headers"], item["body"] + b" ")
    assert not verify(hook["secret"], item["headers"] | {"Perks-Timestamp": str(int(time.time()) - 301)},
                      item["body"])
    event = item["event"]
    assert item["headers"]["Perks-Event-Id"] == event["id"]
    assert event["type"] == "merchant.suspended"
    assert event["data"] == {"merchant_id": merchant["id"], "name": merchant["name"]}
    listed = await api.ok("GET", "/api/v1/events", await api.staff("admin"))
    assert listed["items"] == [event]  # delivered, so final
    [delivery] = await deliveries(api, hook["id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1 and delivery["last_status"] == 204
    assert delivery["event_id"] == event["id"] and delivery["next_attempt_at"] is None


async def test_a_failing_receiver_is_retried_and_then_gets_everything_in_order(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    receiver.mode = "fail"
    ids = await emit(db, 5)
    await eventually(lambda: receiver.attempts >= 3)
    pending = await deliveries(api, hook["id"], status="pending")
    assert sorted(item["event_id"] for item in pending) == sorted(ids)
    [head] = [item for item in pending if item["attempts"]]
    assert head["event_id"] == ids[0], "later events wait behind the first"
    assert head["attempts"] >= 2 and head["last_status"] == 500 and head["last_error"] == "HTTP 500"
    assert receiver.received == []
    receiver.mode = "ok"
    await eventually(lambda: len(receiver.received) == 5)
    await asyncio.sleep(0.5)
    assert receiver.event_ids() == ids


async def test_a_receiver_that_stalls_past_the_timeout_is_retried(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    receiver.mode = "stall"
    ids = await emit(db, 2)

    async def timed_out():
        items = await deliveries(api, hook["id"], status="pending")
        return any(item["last_error"] and "no answer" in item["last_error"] for item in items)

    await eventually(timed_out)
    receiver.mode = "ok"
    await eventually(lambda: len(receiver.received) == 2)
    assert receiver.event_ids() == ids


async def test_a_receiver_down_for_a_while_gets_everything_once_in_order_when_back(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    await receiver.stop()
    ids = await emit(db, 10)
    await eventually(lambda: _has_error(api, hook["id"]))
    await asyncio.sleep(1.0)
    await receiver.start()
    await eventually(lambda: len(receiver.received) == 10)
    await asyncio.sleep(0.5)
    assert receiver.event_ids() == ids
    items = await deliveries(api, hook["id"], limit=50)
    assert {item["status"] for item in items} == {"delivered"}


async def _has_error(api, hook_id):
    return any(item["last_error"] for item in await deliveries(api, hook_id))


async def test_two_dispatchers_deliver_each_event_once_per_subscription_in_order(
    api, db, config, clock, aiohttp_client, database_url
):
    second = await aiohttp_client(create_app(config, clock=clock))  # another worker on the same database
    receivers = [Receiver(), Receiver(), Receiver()]
    for recv in receivers:
        await recv.start()
    try:
        for recv in receivers:
            await subscribe(api, recv.url)

        async def writer(n):
            conn = await connect(database_url)
            try:
                return await emit(conn, n)
            finally:
                await conn.close()

        await asyncio.gather(*(writer(15) for _ in range(4)))
        order: list[str] = []

        async def all_final():
            listed = await api.ok("GET", "/api/v1/events", await api.staff("admin"), params={"limit": 500})
            order[:] = [item["id"] for item in listed["items"]]
            return len(order) == 60

        await eventually(all_final)
        for recv in receivers:
            await eventually(lambda recv=recv: len(recv.received) >= 60, timeout=30)
        await asyncio.sleep(0.5)
        for recv in receivers:
            assert recv.event_ids() == order
        workers = [api.client.app[DISPATCHER].attempts_made, second.app[DISPATCHER].attempts_made]
        assert sum(workers) == 180, workers  # no attempt sent twice
        assert min(workers) > 0, workers  # both raced for the work
    finally:
        for recv in receivers:
            await recv.stop()


async def test_a_paused_subscription_delivers_nothing_until_resumed(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    admin = await api.staff("admin")
    paused = await api.ok("PATCH", f"{WEBHOOKS}/{hook['id']}", admin, json={"status": "paused"})
    assert paused["status"] == "paused"
    ids = await emit(db, 3)
    await asyncio.sleep(1.0)
    assert receiver.attempts == 0
    await api.ok("PATCH", f"{WEBHOOKS}/{hook['id']}", admin, json={"status": "active"})
    await eventually(lambda: len(receiver.received) == 3)
    assert receiver.event_ids() == ids


async def test_only_the_subscribed_types_are_delivered(api, receiver, db):
    await subscribe(api, receiver.url, types=["grant.created"])
    await emit(db, 2)
    granted = await emit(db, 1, type="grant.created")
    await eventually(lambda: len(receiver.received) == 1)
    await asyncio.sleep(0.5)
    assert receiver.event_ids() == granted


async def test_a_delivery_fails_for_good_after_the_retry_period_and_can_be_retried(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    receiver.mode = "fail"
    first, second = await emit(db, 2)

    async def first_failed():
        items = await deliveries(api, hook["id"], status="failed")
        return [item["event_id"] for item in items] == [first]

    await eventually(first_failed, timeout=20)
    receiver.mode = "ok"
    await eventually(lambda: receiver.event_ids() == [second])
    [failed] = await deliveries(api, hook["id"], status="failed")
    assert failed["next_attempt_at"] is None and failed["attempts"] >= 2
    admin = await api.staff("admin")
    retried = await api.ok("POST", f"{WEBHOOKS}/{hook['id']}/deliveries/{failed['id']}/retry", admin, 202)
    assert retried["status"] == "pending"
    await eventually(lambda: receiver.event_ids() == [second, first])
    status, body = await api.call("POST", f"{WEBHOOKS}/{hook['id']}/deliveries/{failed['id']}/retry", admin)
    assert status == 409 and body["error"]["code"] == "conflict"
    entries = await api.audit_entries(entity_type="webhook_delivery", entity_id=failed["id"])
    assert [entry["action"] for entry in entries] == ["webhook_delivery.retry"]


async def test_a_rotated_secret_signs_the_next_deliveries(api, receiver, db):
    hook = await subscribe(api, receiver.url)
    admin = await api.staff("admin")
    rotated = await api.ok("POST", f"{WEBHOOKS}/{hook['id']}/rotate-secret", admin)
    assert rotated["secret"] != hook["secret"] and rotated["secret"].startswith("whsec_")
    await emit(db, 1)
    await eventually(lambda: len(receiver.received) == 1)
    item = receiver.received[0]
    assert verify_as_documented(rotated["secret"], item["headers"], item["body"], time.time())
    assert not verify_as_documented(hook["secret"], item["headers"], item["body"], time.time())
    entries = await api.audit_entries(entity_type="webhook", entity_id=hook["id"])
    assert [entry["action"] for entry in entries] == ["webhook.rotate_secret", "webhook.create"]
    assert hook["secret"] not in str(entries) and rotated["secret"] not in str(entries)


async def test_the_demo_receiver_verifies_what_it_is_sent(api, db, config):
    import socket

    from perks.demo import seed_demo
    from perks.demo_receiver import start_receiver, subscribe_receiver

    await seed_demo(db, config, clients=3)
    tags = dict(await db.fetch("SELECT external_ref, tags::text[] FROM clients WHERE tags <> '{}' ORDER BY 1"))
    assert tags == {"DEMO0001": ["car_owner"], "DEMO0002": ["car_owner", "parent"]}
    assert await db.fetchval("SELECT count(*) FROM grants") == 1
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = await subscribe_receiver(db, config, port)
    assert await subscribe_receiver(db, config, port) != secret  # run again: same subscription, fresh secret
    secret = await subscribe_receiver(db, config, port)
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 1
    start_receiver(port, secret)
    merchant = await api.merchant()
    await api.ok("PATCH", f"/api/v1/merchants/{merchant['id']}", await api.staff("operator"),
                 json={"status": "suspended"})
    hook_id = await db.fetchval("SELECT id::text FROM webhooks")

    suspended = await db.fetchval("SELECT id::text FROM events WHERE type = 'merchant.suspended'")

    async def delivered():
        # (The seeded grant's event may be delivered too, when it was not yet final as the subscription began.)
        items = await deliveries(api, hook_id)
        return suspended in [item["event_id"] for item in items] and all(
            (item["status"], item["last_status"]) == ("delivered", 204) for item in items)

    await eventually(delivered)
