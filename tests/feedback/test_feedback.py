"""Feedback: a client rates its own redemption once within 30 days; merchants and the bank read the ratings."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from perks.feedback.service import merchant_rating

SHANGHAI = ZoneInfo("Asia/Shanghai")
REDEEMED_AT = datetime(2026, 3, 10, 11, 0, tzinfo=SHANGHAI)


@pytest.fixture
def config(config):
    """Sessions that outlast the clock's jump past the 30-day window."""
    return dataclasses.replace(config, session_ttl_seconds=90 * 86400, client_session_ttl_seconds=90 * 86400)


@pytest.fixture
async def prog(api, clock):
    clock.set(REDEEMED_AT)
    return await api.program(yearly_quota=None)


async def redeemed(api, prog, session) -> dict:
    """A redemption of the client holding ``session``, at the clock's instant."""
    voucher = await api.voucher(session, prog["perk"])
    status, body = await api.redeem(prog["cashier"], voucher["token"])
    assert status == 201, body
    return body


def feedback_path(redemption_id: str) -> str:
    return f"/api/v1/me/redemptions/{redemption_id}/feedback"


async def test_a_client_rates_its_redemption_once_and_it_is_audited(api, prog, clock):
    client, session = await api.member(prog["tier"])
    redemption = await redeemed(api, prog, session)
    clock.advance(hours=2)

    body = await api.ok("POST", feedback_path(redemption["id"]), session, 201,
                        json={"rating": 4, "comment": "  洗得很干净，\n下次再来  "})

    assert body == {
        "redemption_id": redemption["id"], "rating": 4, "comment": "洗得很干净，\n下次再来",
        "created_at": body["created_at"],
    }
    assert datetime.fromisoformat(body["created_at"]) == clock.now()
    entries = await api.audit_entries(entity_type="feedback", entity_id=redemption["id"])
    assert [entry["action"] for entry in entries] == ["feedback.create"]
    assert entries[0]["actor"] == {"id": client["id"], "username": f"client:{client['id']}", "role": "client"}
    assert entries[0]["after"]["rating"] == 4

    status, again = await api.call("POST", feedback_path(redemption["id"]), session, json={"rating": 5})
    assert status == 409 and again["error"]["code"] == "conflict"
    assert "already rated" in again["error"]["message"]
    assert await api.db.fetchval("SELECT rating FROM feedback") == 4


async def test_the_30_day_window(api, prog, clock):
    _, session = await api.member(prog["tier"])
    first = await redeemed(api, prog, session)
    clock.advance(seconds=1)
    second = await redeemed(api, prog, session)

    clock.set(datetime.fromisoformat(first["redeemed_at"]) + timedelta(days=30, seconds=1))
    status, body = await api.call("POST", feedback_path(first["id"]), session, json={"rating": 3})
    assert status == 409 and body["error"]["code"] == "conflict"
    assert "30 days" in body["error"]["message"]
    # The second, redeemed a second later, is exactly 30 days old: still in time.
    await api.ok("POST", feedback_path(second["id"]), session, 201, json={"rating": 3})
    assert await api.db.fetchval("SELECT count(*) FROM feedback") == 1


async def test_a_voided_redemption_cannot_be_rated_but_an_earlier_rating_stays(api, prog, clock):
    _, session = await api.member(prog["tier"])
    rated, unrated = await redeemed(api, prog, session), await redeemed(api, prog, session)
    await api.ok("POST", feedback_path(rated["id"]), session, 201, json={"rating": 1, "comment": "rude"})
    for redemption in (rated, unrated):
        await api.ok("POST", f"/api/v1/merchant/redemptions/{redemption['id']}/void", prog["manager"],
                     json={"reason": "test"})

    status, body = await api.call("POST", feedback_path(unrated["id"]), session, json={"rating": 5})
    assert status == 409 and body["error"]["code"] == "conflict" and "voided" in body["error"]["message"]
    # Voiding is no way to erase a bad rating.
    listed = await api.ok("GET", f"/api/v1/merchants/{prog['merchant']}/feedback", prog["manager"])
    assert [item["rating"] for item in listed["items"]] == [1]
    assert (listed["average"], listed["count"]) == (1.0, 1)


async def test_only_ones_own_redemption(api, prog):
    _, session = await api.member(prog["tier"])
    _, other_session = await api.member(prog["tier"])
    redemption = await redeemed(api, prog, session)
    path = feedback_path(redemption["id"])

    status, body = await api.call("POST", path, other_session, json={"rating": 5})
    assert status == 404 and body["error"]["code"] == "not_found"
    for missing in ("00000000-0000-4000-8000-000000000000", "not-an-id"):
        assert (await api.call("POST", feedback_path(missing), session, json={"rating": 5}))[0] == 404
    for token in (prog["manager"], prog["cashier"], await api.staff("admin")):
        status, body = await api.call("POST", path, token, json={"rating": 5})
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await api.call("POST", path, None, json={"rating": 5}))[0] == 401
    assert await api.db.fetchval("SELECT count(*) FROM feedback") == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"rating": -1}, "rating"),
        ({"rating": "5"}, "rating"),
        ({"rating": 4.5}, "rating"),
        ({"rating": True}, "rating"),
        ({"rating": None}, "rating"),
        ({}, "rating"),
        ({"rating": 5, "comment": "好" * 501}, "comment"),
        ({"rating": 5, "comment": 5}, "comment"),
        ({"rating": 5, "comment": "a\x00b"}, "comment"),
        ({"rating": 5, "stars": 5}, "stars"),
    ],
)
async def test_rating_and_comment_are_validated(api, prog, payload, field):
    _, session = await api.member(prog["tier"])
    redemption = await redeemed(api, prog, session)
    status, body = await api.call("POST", feedback_path(redemption["id"]), session, json=payload)
    assert status == 400, body
    assert body["error"]["code"] == "bad_request"
    assert field in body["error"]["details"]["fields"], body
    assert await api.db.fetchval("SELECT count(*) FROM feedback") == 0


async def test_edges_of_a_valid_rating(api, prog):
    _, session = await api.member(prog["tier"])
    low, high, blank = [await redeemed(api, prog, session) for _ in range(3)]
    assert (await api.ok("POST", feedback_path(low["id"]), session, 201, json={"rating": 1}))["comment"] is None
    long = await api.ok("POST", feedback_path(high["id"]), session, 201, json={"rating": 5, "comment": "好" * 500})
    assert long["comment"] == "好" * 500
    empty = await api.ok("POST", feedback_path(blank["id"]), session, 201, json={"rating": 3, "comment": "   "})
    assert empty["comment"] is None


async def test_merchants_and_the_bank_read_ratings_with_masked_names(api, prog, clock, db):
    ratings = [5, 4, 2]
    for index, rating in enumerate(ratings):
        _, session = await api.member(prog["tier"], name=["罗小升", "Alice Smith", "王五"][index])
        redemption = await redeemed(api, prog, session)
        clock.advance(minutes=1)
        await api.ok("POST", feedback_path(redemption["id"]), session, 201,
                     json={"rating": rating, "comment": f"comment {index}"})
    path = f"/api/v1/merchants/{prog['merchant']}/feedback"

    body = await api.ok("GET", path, prog["manager"])

    assert [item["rating"] for item in body["items"]] == [2, 4, 5]  # newest first
    assert [item["client"] for item in body["items"]] == [
        {"display_name": "王*"}, {"display_name": "A*********h"}, {"display_name": "罗*升"}
    ]
    assert [item["comment"] for item in body["items"]] == ["comment 2", "comment 1", "comment 0"]
    assert body["items"][0]["perk"] == prog["perk"] and body["items"][0]["store_id"] == prog["store"]
    assert "client_id" not in body["items"][0] and "name" not in body["items"][0]["client"]
    assert (body["average"], body["count"]) == (3.67, 3)
    assert body["next_cursor"] is None
    assert await merchant_rating(db, UUID(prog["merchant"])) == {"average": 3.67, "count": 3}

    first = await api.ok("GET", path, await api.staff("auditor"), params={"limit": "2"})
    assert [item["rating"] for item in first["items"]] == [2, 4] and first["next_cursor"]
    rest = await api.ok("GET", path, await api.staff("auditor"), params={"limit": "2", "cursor": first["next_cursor"]})
    assert [item["rating"] for item in rest["items"]] == [5] and rest["next_cursor"] is None
    assert (rest["average"], rest["count"]) == (3.67, 3)

    for role in ("admin", "operator"):
        assert (await api.ok("GET", path, await api.staff(role)))["count"] == 3
    assert (await api.call("GET", path, prog["cashier"]))[0] == 403
    _, session = await api.member(prog["tier"])
    assert (await api.call("GET", path, session))[0] == 403
    other = await api.merchant()
    _, other_manager = await api.merchant_user(other["id"], "manager")
    status, body = await api.call("GET", path, other_manager)
    assert status == 404 and body["error"]["code"] == "not_found"
    unrated = await api.ok("GET", f"/api/v1/merchants/{other['id']}/feedback", other_manager)
    assert unrated == {"items": [], "next_cursor": None, "average": None, "count": 0}
    assert await merchant_rating(db, UUID(other["id"])) == {"average": None, "count": 0}
    auditor = await api.staff("auditor")
    assert (await api.call("GET", "/api/v1/merchants/00000000-0000-4000-8000-000000000000/feedback", auditor))[0] == 404
    status, body = await api.call("GET", path, auditor, params={"limit": "0"})
    assert status == 400 and "limit" in body["error"]["details"]["fields"]
    status, body = await api.call("GET", path, auditor, params={"cursor": "garbage"})
    assert status == 400 and "cursor" in body["error"]["details"]["fields"]
