"""The outbox and GET /events: event order without gaps, filters, roles; a rolled-back change writes no event."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from perks.core.db import connect
from perks.events.service import record_event
from tests.webhook_support import eventually, fast_config

EVENTS = "/api/v1/events"
NOW = datetime(2026, 3, 1, 4, 0, tzinfo=timezone.utc)


@pytest.fixture
def config(config):
    return fast_config(config, webhook_enabled="0")


async def emit(conn, type="merchant.suspended", n=0):
    async with conn.transaction():
        return str(await record_event(conn, type, NOW, {"merchant_id": f"m{n}", "name": "x"}))


async def read(api, role="admin", **params):
    return await api.ok("GET", EVENTS, await api.staff(role), params={k: str(v) for k, v in params.items()})


async def test_events_in_order_with_a_cursor_and_a_type_filter(api, db):
    ids = [await emit(db, n=n) for n in range(3)]
    ids.append(await emit(db, "grant.created"))
    await eventually(lambda: _count(api, 4))
    first = await read(api, limit=2)
    assert [item["id"] for item in first["items"]] == ids[:2] and first["next_cursor"] == ids[1]
    rest = await read(api, after=first["next_cursor"], limit=2)
    assert [item["id"] for item in rest["items"]] == ids[2:]
    last = await read(api, after=ids[3])
    assert last == {"items": [], "next_cursor": None}
    grants = await read(api, types="grant.created")
    assert [item["id"] for item in grants["items"]] == ids[3:] and grants["next_cursor"] is None
    both = await read(api, types="grant.created,merchant.suspended")
    assert len(both["items"]) == 4
    item = first["items"][0]
    assert item == {"id": ids[0], "type": "merchant.suspended", "occurred_at": "2026-03-01T04:00:00+00:00",
                    "data": {"merchant_id": "m0", "name": "x"}}
    assert (await read(api, "auditor"))["items"] == (await read(api))["items"]


async def _ids(api, ids):
    return [item["id"] for item in (await read(api))["items"]] == ids


async def _count(api, n):
    return len((await read(api, limit=500))["items"]) == n


@pytest.mark.parametrize("params, field", [
    ({"types": "grant.made"}, "types"), ({"types": "grant.created,nope"}, "types"), ({"types": ","}, "types"),
    ({"after": "-1"}, "after"), ({"after": "abc"}, "after"), ({"after": "999999"}, "after"),
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
])
async def test_bad_queries_name_the_field(api, params, field):
    status, body = await api.call("GET", EVENTS, await api.staff("admin"), params=params)
    assert status == 400 and field in body["error"]["details"]["fields"], body


@pytest.mark.parametrize("role", ["operator"])
async def test_other_staff_may_not_read_events(api, role):
    status, body = await api.call("GET", EVENTS, await api.staff(role))
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api.call("GET", EVENTS)
    assert status == 401


async def test_merchant_users_and_clients_may_not_read_events(api):
    merchant = await api.merchant()
    _, manager = await api.merchant_user(merchant["id"], "manager")
    client = await api.new_client()
    for token in (manager, await api.client_session(client["id"])):
        status, _ = await api.call("GET", EVENTS, token)
        assert status == 403


async def test_a_rolled_back_change_writes_no_event(api, db):
    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with db.transaction():
            await record_event(db, "merchant.suspended", NOW, {"merchant_id": "m", "name": "x"})
            raise Abandon()
    kept = await emit(db)
    await eventually(lambda: _count(api, 1))
    assert [item["id"] for item in (await read(api))["items"]] == [kept]
    assert await db.fetchval("SELECT count(*) FROM events") == 1


async def test_a_failed_suspension_writes_no_event(api, db):
    """A refused PATCH (a name far too long) suspends nothing and leaves no event behind."""
    merchant = await api.merchant()
    status, _ = await api.call("PATCH", f"/api/v1/merchants/{merchant['id']}", await api.staff("operator"),
                               json={"status": "suspended", "name": "x" * 5000})
    assert status == 400
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_an_event_committed_late_with_a_lower_id_is_not_skipped(api, db, database_url):
    """The reordering that defeats an id cursor: the older transaction writes its event last and commits first."""
    older, newer = await connect(database_url), await connect(database_url)
    try:
        older_tx, newer_tx = older.transaction(), newer.transaction()
        await older_tx.start()
        await older.fetchval("SELECT pg_current_xact_id()")  # takes its transaction id first
        await newer_tx.start()
        late = str(await record_event(newer, "merchant.suspended", NOW, {"merchant_id": "late", "name": "x"}))
        early = str(await record_event(older, "merchant.suspended", NOW, {"merchant_id": "early", "name": "x"}))
        assert int(late) < int(early)
        await older_tx.commit()
        # An id cursor would now stand at `early` and never see `late` (a lower id, committed later). (Eventually:
        # a transaction elsewhere on the server may hold `early` back a moment; `late` it holds back for sure.)
        await eventually(lambda: _ids(api, [early]))
        await newer_tx.commit()
        await eventually(lambda: _count(api, 2))
        assert [item["id"] for item in (await read(api, after=early))["items"]] == [late]
        assert [item["id"] for item in (await read(api))["items"]] == [early, late]
    finally:
        await asyncio.gather(older.close(), newer.close())


async def test_finalizing_a_statement_writes_a_statement_finalized_event(api, db, clock):
    merchant = await api.merchant()
    clock.set(datetime(2026, 6, 2, 4, 0, tzinfo=timezone.utc))
    statement = await api.ok("POST", f"/api/v1/merchants/{merchant['id']}/statements/2026-05/finalize",
                             await api.staff("admin"))
    [row] = await db.fetch("SELECT type, occurred_at, data FROM events")
    statement_id = await db.fetchval("SELECT id::text FROM statements WHERE merchant_id = $1::uuid", merchant["id"])
    assert row["type"] == "statement.finalized"
    assert row["occurred_at"] == datetime.fromisoformat(statement["finalized_at"])
    assert row["data"] == {
        "statement_id": statement_id, "merchant_id": merchant["id"], "year": 2026, "month": 5, "total_fen": 0,
        "redeemed_count": 0, "redeemed_fen": 0, "adjustment_count": 0, "adjustment_fen": 0,
        "finalized_at": statement["finalized_at"],
    }


async def test_suspending_a_merchant_writes_one_event_and_reactivating_none(api, db):
    merchant = await api.merchant()
    operator = await api.staff("operator")
    path = f"/api/v1/merchants/{merchant['id']}"
    await api.ok("PATCH", path, operator, json={"status": "suspended"})
    await api.ok("PATCH", path, operator, json={"status": "suspended", "city": "Kunming"})
    await api.ok("PATCH", path, operator, json={"status": "active"})
    rows = await db.fetch("SELECT type, data FROM events")
    assert [(row["type"], row["data"]) for row in rows] == [
        ("merchant.suspended", {"merchant_id": merchant["id"], "name": merchant["name"]})
    ]


async def test_an_event_of_an_open_older_transaction_holds_back_later_ones(api, db, database_url):
    """Until the older transaction ends, a newer committed event is not listed: it might have to follow one."""
    older = await connect(database_url)
    try:
        tx = older.transaction()
        await tx.start()
        first = str(await record_event(older, "merchant.suspended", NOW, {"merchant_id": "first", "name": "x"}))
        second = await emit(db, n=2)
        assert (await read(api))["items"] == []
        await tx.commit()
        await eventually(lambda: _count(api, 2))
        assert [item["id"] for item in (await read(api))["items"]] == [first, second]
    finally:
        await older.close()
