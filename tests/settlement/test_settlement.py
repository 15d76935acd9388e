"""Settlement: monthly statements per store and perk, finalizing, voids after finalizing, CSV, who may read."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from datetime import datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from perks.core.auth import SYSTEM
from perks.core.db import connect
from perks.redemption.voids import void
from tests.support import unique

SHANGHAI = ZoneInfo("Asia/Shanghai")
REASON = {"reason": "served the wrong client"}


@pytest.fixture
def config(config):
    """Sessions that outlast the clock's jumps across months."""
    return dataclasses.replace(config, session_ttl_seconds=400 * 86400, client_session_ttl_seconds=400 * 86400)


def at(month: int, day: int, hour: int = 12, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def statement_path(merchant_id: str, month: str) -> str:
    return f"/api/v1/merchants/{merchant_id}/statements/{month}"


@pytest.fixture
async def shop(api, clock):
    """A merchant with two stores (Chinese names) honouring two perks, and a client entitled to both, unlimited:
    ``{merchant, stores: {a, b}, cashiers: {a, b}, manager, perks: {wash, coffee}, session, tier}``."""
    clock.set(at(4, 1))
    tier = await api.tier()
    wash = await api.perk(name="洗车")
    coffee = await api.perk(name="咖啡", category="coffee")
    for perk in (wash, coffee):
        await api.entitle(tier["code"], perk["code"], None)
    merchant = await api.merchant(name=unique("星光洗车"))
    store_a = await api.store(merchant["id"], name="王府井店")
    store_b = await api.store(merchant["id"], name="国贸店, \"二号\"")
    await api.agree(merchant["id"], wash["code"], None, 1500)
    await api.agree(merchant["id"], coffee["code"], None, 800)
    _, cashier_a = await api.merchant_user(merchant["id"], "cashier", store_a["id"])
    _, cashier_b = await api.merchant_user(merchant["id"], "cashier", store_b["id"])
    _, manager = await api.merchant_user(merchant["id"], "manager")
    _, session = await api.member(tier["code"])
    return {
        "merchant": merchant, "stores": {"a": store_a, "b": store_b}, "cashiers": {"a": cashier_a, "b": cashier_b},
        "manager": manager, "perks": {"wash": wash["code"], "coffee": coffee["code"]}, "session": session,
        "tier": tier["code"],
    }


async def redeem_at(api, clock, shop, when: datetime, perk: str = "wash", store: str = "a") -> dict:
    """A redemption of ``perk`` at ``store`` at the instant ``when``."""
    clock.set(when)
    voucher = await api.voucher(shop["session"], shop["perks"][perk])
    status, body = await api.redeem(shop["cashiers"][store], voucher["token"])
    assert status == 201, body
    return body


async def bank_void(api, redemption_id: str) -> dict:
    return await api.ok("POST", f"/api/v1/redemptions/{redemption_id}/void", await api.staff("operator"), json=REASON)


def line(shop, kind, store, perk, price, count, source=None) -> dict:
    return {
        "kind": kind,
        "store_id": shop["stores"][store]["id"],
        "store_name": shop["stores"][store]["name"],
        "perk": shop["perks"][perk],
        "perk_name": {"wash": "洗车", "coffee": "咖啡"}[perk],
        "source_month": source,
        "unit_price_fen": price,
        "count": count,
        "amount_fen": price * count,
    }


def totals(redeemed_count, redeemed_fen, adjustment_count=0, adjustment_fen=0) -> dict:
    return {
        "redeemed_count": redeemed_count, "redeemed_fen": redeemed_fen,
        "adjustment_count": adjustment_count, "adjustment_fen": adjustment_fen,
        "count": redeemed_count + adjustment_count, "amount_fen": redeemed_fen + adjustment_fen,
    }


# ---- statements ------------------------------------------------------------------------------


async def test_a_statement_has_a_line_per_store_perk_and_recorded_price(api, clock, shop):
    for _ in range(3):
        await redeem_at(api, clock, shop, at(5, 3))
    await redeem_at(api, clock, shop, at(5, 4), "coffee")
    await redeem_at(api, clock, shop, at(5, 5), store="b")
    voided = await redeem_at(api, clock, shop, at(5, 5, 13), store="b")
    await bank_void(api, voided["id"])
    # The agreed price changes; redemptions keep the price of their instant.
    await api.agree(shop["merchant"]["id"], shop["perks"]["wash"], None, 2000)
    await redeem_at(api, clock, shop, at(5, 20))
    # The month is the quota month in Shanghai: 23:30 on 31 May is May, 00:10 on 1 June is June.
    await redeem_at(api, clock, shop, at(5, 31, 23, 30))
    await redeem_at(api, clock, shop, at(6, 1, 0, 10))

    body = await api.ok("GET", statement_path(shop["merchant"]["id"], "2026-05"), await api.staff("auditor"))

    assert body["merchant_id"] == shop["merchant"]["id"]
    assert body["merchant_name"] == shop["merchant"]["name"]
    assert body["month"] == "2026-05"
    assert body["status"] == "open" and body["finalized_at"] is None
    # Lines: by store name (国贸店 sorts before 王府井店), then perk code, then price.
    wash_first = shop["perks"]["wash"] < shop["perks"]["coffee"]
    a_lines = [line(shop, "redemption", "a", "wash", 1500, 3), line(shop, "redemption", "a", "wash", 2000, 2)]
    coffee = [line(shop, "redemption", "a", "coffee", 800, 1)]
    a_lines = a_lines + coffee if wash_first else coffee + a_lines
    assert body["lines"] == [line(shop, "redemption", "b", "wash", 1500, 1)] + a_lines
    assert body["totals"] == totals(7, 4 * 1500 + 2 * 2000 + 800)

    june = await api.ok("GET", statement_path(shop["merchant"]["id"], "2026-06"), shop["manager"])
    assert june["lines"] == [line(shop, "redemption", "a", "wash", 2000, 1)]
    assert june["totals"] == totals(1, 2000)


async def test_a_void_after_finalizing_is_owed_back_in_the_next_open_month(api, clock, shop):
    merchant_id = shop["merchant"]["id"]
    admin = await api.staff("admin")
    may = [await redeem_at(api, clock, shop, at(5, day)) for day in (2, 3, 4)]
    clock.set(at(5, 6))
    await bank_void(api, may[2]["id"])  # before finalizing: simply left out of May

    clock.set(at(6, 2))
    finalized_may = await api.ok("POST", statement_path(merchant_id, "2026-05") + "/finalize", admin)
    assert finalized_may["status"] == "finalized"
    assert datetime.fromisoformat(finalized_may["finalized_at"]) == at(6, 2)
    assert finalized_may["lines"] == [line(shop, "redemption", "a", "wash", 1500, 2)]
    assert finalized_may["totals"] == totals(2, 3000)
    assert await api.ok("GET", statement_path(merchant_id, "2026-05"), admin) == finalized_may

    june = await redeem_at(api, clock, shop, at(6, 4), store="b")
    clock.set(at(6, 5))
    await bank_void(api, may[0]["id"])  # after finalizing: owed back in June, the next open month

    assert await api.ok("GET", statement_path(merchant_id, "2026-05"), admin) == finalized_may
    june_statement = await api.ok("GET", statement_path(merchant_id, "2026-06"), shop["manager"])
    assert june_statement["lines"] == [
        line(shop, "redemption", "b", "wash", 1500, 1),
        line(shop, "adjustment", "a", "wash", 1500, -1, "2026-05"),
    ]
    assert june_statement["totals"] == totals(1, 1500, -1, -1500)

    clock.set(at(7, 1))
    finalized_june = await api.ok("POST", statement_path(merchant_id, "2026-06") + "/finalize", admin)
    assert finalized_june["lines"] == june_statement["lines"]
    assert finalized_june["totals"] == june_statement["totals"]
    # Taken back once: July owes nothing for it.
    july = await api.ok("GET", statement_path(merchant_id, "2026-07"), admin)
    assert july["lines"] == [] and july["totals"] == totals(0, 0)

    clock.set(at(7, 3))
    await bank_void(api, may[1]["id"])  # May's next open month is now July
    await bank_void(api, june["id"])
    july = await api.ok("GET", statement_path(merchant_id, "2026-07"), admin)
    # Lines by store, then perk, then the month corrected.
    assert july["lines"] == [
        line(shop, "adjustment", "b", "wash", 1500, -1, "2026-06"),
        line(shop, "adjustment", "a", "wash", 1500, -1, "2026-05"),
    ]
    assert july["totals"] == totals(0, 0, -2, -3000)
    # The finalized statements never change.
    assert await api.ok("GET", statement_path(merchant_id, "2026-05"), admin) == finalized_may
    assert await api.ok("GET", statement_path(merchant_id, "2026-06"), admin) == finalized_june

    entries = await api.audit_entries(entity_type="statement", entity_id=f"{merchant_id}/2026-05")
    assert [entry["action"] for entry in entries] == ["statement.finalize"]
    assert entries[0]["actor"]["role"] == "admin"
    assert entries[0]["before"] is None
    assert entries[0]["after"]["totals"] == totals(2, 3000)


async def test_an_owed_void_lands_in_the_first_open_month_even_an_earlier_one(api, clock, shop):
    merchant_id = shop["merchant"]["id"]
    admin = await api.staff("admin")
    may = await redeem_at(api, clock, shop, at(5, 10))
    clock.set(at(8, 1))
    for month in ("2026-05", "2026-07"):
        await api.ok("POST", statement_path(merchant_id, month) + "/finalize", admin)
    await bank_void(api, may["id"])
    june = await api.ok("GET", statement_path(merchant_id, "2026-06"), admin)
    assert june["lines"] == [line(shop, "adjustment", "a", "wash", 1500, -1, "2026-05")]
    august = await api.ok("GET", statement_path(merchant_id, "2026-08"), admin)
    assert august["lines"] == []


async def test_a_void_committing_after_the_snapshot_is_owed_back_whatever_its_instant(
    api, clock, shop, database_url
):
    """The void's instant precedes the finalization, but it commits after the snapshot: it is still owed."""
    merchant_id = shop["merchant"]["id"]
    may = await redeem_at(api, clock, shop, at(5, 10))
    other = await connect(database_url)
    try:
        pending = other.transaction()
        await pending.start()
        await void(other, SYSTEM, UUID(may["id"]), "late", at(6, 1, 9), as_bank=True)
        clock.set(at(6, 1, 10))
        finalized = await api.ok("POST", statement_path(merchant_id, "2026-05") + "/finalize", await api.staff("admin"))
        await pending.commit()
    finally:
        await other.close()
    assert finalized["totals"] == totals(1, 1500)
    june = await api.ok("GET", statement_path(merchant_id, "2026-06"), shop["manager"])
    assert june["lines"] == [line(shop, "adjustment", "a", "wash", 1500, -1, "2026-05")]


async def test_finalizing_refusals(api, clock, shop):
    merchant_id = shop["merchant"]["id"]
    admin = await api.staff("admin")
    await redeem_at(api, clock, shop, at(5, 31, 23, 59))
    finalize = statement_path(merchant_id, "2026-05") + "/finalize"

    # Not ended yet in Shanghai (16:30 UTC on 31 May is 00:30 on 1 June there: ended).
    clock.set(at(5, 31, 23, 59, 30))
    status, body = await api.call("POST", finalize, admin)
    assert status == 409 and body["error"]["code"] == "conflict"
    assert "has not ended" in body["error"]["message"]
    assert await api.db.fetchval("SELECT count(*) FROM statements") == 0

    clock.set(at(6, 1, 0, 0))
    for role in ("operator", "auditor"):
        status, body = await api.call("POST", finalize, await api.staff(role))
        assert status == 403 and body["error"]["code"] == "forbidden"
    for token in (shop["manager"], shop["cashiers"]["a"], shop["session"]):
        assert (await api.call("POST", finalize, token))[0] == 403
    assert (await api.call("POST", finalize))[0] == 401
    status, body = await api.call("POST", statement_path(merchant_id, "2026-13") + "/finalize", admin)
    assert status == 400 and body["error"]["details"]["fields"] == {"month": "the month must be 01 to 12"}
    status, body = await api.call("POST", statement_path(merchant_id, "May-2026") + "/finalize", admin)
    assert status == 400 and "month" in body["error"]["details"]["fields"]
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await api.call("POST", statement_path(unknown, "2026-05") + "/finalize", admin))[0] == 404
    assert (await api.call("POST", statement_path("nope", "2026-05") + "/finalize", admin))[0] == 404

    assert (await api.call("POST", finalize, admin))[0] == 200
    status, body = await api.call("POST", finalize, admin)
    assert status == 409 and body["error"]["code"] == "conflict"
    assert "already finalized" in body["error"]["message"]
    assert await api.db.fetchval("SELECT count(*) FROM statements") == 1


async def test_concurrent_finalizations_make_one_statement(api, clock, shop):
    await redeem_at(api, clock, shop, at(5, 10))
    clock.set(at(6, 3))
    finalize = statement_path(shop["merchant"]["id"], "2026-05") + "/finalize"
    admin = await api.staff("admin")
    results = await asyncio.gather(*(api.call("POST", finalize, admin) for _ in range(6)))
    assert sorted(status for status, _ in results) == [200] + [409] * 5
    assert await api.db.fetchval("SELECT count(*) FROM statements") == 1
    assert await api.db.fetchval("SELECT count(*) FROM statement_lines") == 1


async def test_a_finalized_statement_cannot_be_altered_even_in_sql(api, clock, shop):
    await redeem_at(api, clock, shop, at(5, 10))
    clock.set(at(6, 3))
    await api.ok("POST", statement_path(shop["merchant"]["id"], "2026-05") + "/finalize", await api.staff("admin"))
    for statement in ("UPDATE statement_lines SET count = 99", "DELETE FROM statements", "UPDATE statements SET "
                      "redeemed_fen = 0", "DELETE FROM statement_lines", "TRUNCATE statement_lines CASCADE"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="never changes"):
            await api.db.execute(statement)


async def test_who_reads_a_statement(api, clock, shop):
    await redeem_at(api, clock, shop, at(5, 10))
    path = statement_path(shop["merchant"]["id"], "2026-05")
    for role in ("admin", "operator", "auditor"):
        assert (await api.ok("GET", path, await api.staff(role)))["totals"]["count"] == 1
    assert (await api.ok("GET", path, shop["manager"]))["totals"]["count"] == 1
    for token in (shop["cashiers"]["a"], shop["session"]):
        status, body = await api.call("GET", path, token)
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await api.call("GET", path))[0] == 401

    other = await api.merchant()
    _, other_manager = await api.merchant_user(other["id"], "manager")
    status, body = await api.call("GET", path, other_manager)
    assert status == 404 and body["error"]["code"] == "not_found"
    # Its own merchant's statement, empty.
    own = await api.ok("GET", statement_path(other["id"], "2026-05"), other_manager)
    assert own["lines"] == [] and own["totals"] == totals(0, 0)

    auditor = await api.staff("auditor")
    assert (await api.call("GET", statement_path("00000000-0000-4000-8000-000000000000", "2026-05"), auditor))[0] == 404
    status, body = await api.call("GET", statement_path(shop["merchant"]["id"], "2026-5"), auditor)
    assert status == 400 and body["error"]["details"]["fields"] == {"month": "must be a month as YYYY-MM"}
    status, body = await api.call("GET", path, auditor, params={"format": "xml"})
    assert status == 400 and "format" in body["error"]["details"]["fields"]


# ---- CSV -------------------------------------------------------------------------------------


async def download(api, path: str, token: str, **params: str) -> tuple[bytes, dict]:
    async with api.client.get(path, params={"format": "csv", **params},
                              headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        return await response.read(), dict(response.headers)


def read_csv(raw: bytes) -> list[dict[str, str]]:
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def as_text(value) -> str:
    return "" if value is None else str(value)


def csv_row(statement: dict, item: dict) -> dict[str, str]:
    """A statement line as its CSV row: months as year and month numbers, which spreadsheets keep as they are."""
    year, month = statement["month"].split("-")
    source_year, source_month = item["source_month"].split("-") if item["source_month"] else ("", "")
    return {
        "merchant_name": statement["merchant_name"], "year": year, "month": str(int(month)),
        "status": statement["status"], "kind": item["kind"], "store_id": item["store_id"],
        "store_name": item["store_name"], "perk": item["perk"], "perk_name": item["perk_name"],
        "source_year": source_year, "source_month": str(int(source_month)) if source_month else "",
        "unit_price_fen": str(item["unit_price_fen"]), "count": str(item["count"]),
        "amount_fen": str(item["amount_fen"]),
    }


async def test_a_statement_as_csv_reads_back_exactly(api, clock, shop):
    merchant_id = shop["merchant"]["id"]
    tricky = await api.store(merchant_id, name="=HYPERLINK(\"x\")")
    _, tricky_cashier = await api.merchant_user(merchant_id, "cashier", tricky["id"])
    shop["stores"]["t"], shop["cashiers"]["t"] = tricky, tricky_cashier
    may = await redeem_at(api, clock, shop, at(5, 3))
    await redeem_at(api, clock, shop, at(5, 4), store="b")
    await redeem_at(api, clock, shop, at(5, 4), "coffee", store="t")
    clock.set(at(6, 1))
    await api.ok("POST", statement_path(merchant_id, "2026-05") + "/finalize", await api.staff("admin"))
    await bank_void(api, may["id"])
    await redeem_at(api, clock, shop, at(6, 2))
    auditor = await api.staff("auditor")
    statement = await api.ok("GET", statement_path(merchant_id, "2026-06"), auditor)

    raw, headers = await download(api, statement_path(merchant_id, "2026-06"), auditor)

    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == f'attachment; filename="statement-{merchant_id}-2026-06.csv"'
    assert b"\r\n" in raw and "王府井店".encode() in raw
    rows = read_csv(raw)
    assert rows[:-1] == [csv_row(statement, item) for item in statement["lines"]]
    assert (rows[1]["kind"], rows[1]["source_year"], rows[1]["source_month"]) == ("adjustment", "2026", "5")
    assert rows[-1]["kind"] == "total"
    assert rows[-1]["count"] == "0" and rows[-1]["amount_fen"] == "0"
    assert [row["amount_fen"] for row in rows[:-1]] == ["1500", "-1500"]

    may_statement = await api.ok("GET", statement_path(merchant_id, "2026-05"), shop["manager"])
    may_rows = read_csv((await download(api, statement_path(merchant_id, "2026-05"), shop["manager"]))[0])
    # A name a spreadsheet would run as a formula is defused; the others are exact, quotes and commas too.
    defused = {tricky["name"]: "'" + tricky["name"]}
    assert [row["store_name"] for row in may_rows[:-1]] == [
        defused.get(item["store_name"], item["store_name"]) for item in may_statement["lines"]
    ]
    assert {row["store_name"] for row in may_rows[:-1]} == {"国贸店, \"二号\"", "王府井店", "'=HYPERLINK(\"x\")"}
    assert may_rows[-1]["count"] == "3" and {row["status"] for row in may_rows} == {"finalized"}


# ---- the month's settlement ------------------------------------------------------------------


async def test_the_months_settlement_sums_every_merchants_statement(api, clock, shop):
    merchant_id = shop["merchant"]["id"]
    admin = await api.staff("admin")
    may = await redeem_at(api, clock, shop, at(5, 3))
    await redeem_at(api, clock, shop, at(5, 4), "coffee")
    clock.set(at(6, 1))
    await api.ok("POST", statement_path(merchant_id, "2026-05") + "/finalize", admin)
    await bank_void(api, may["id"])
    await redeem_at(api, clock, shop, at(6, 5), store="b")
    other = await api.program(yearly_quota=None, unit_price_fen=999)
    _, other_session = await api.member(other["tier"])
    clock.set(at(6, 6))
    voucher = await api.voucher(other_session, other["perk"])
    assert (await api.redeem(other["cashier"], voucher["token"]))[0] == 201
    idle = await api.merchant(name="Idle")

    body = await api.ok("GET", "/api/v1/settlements", await api.staff("auditor"), params={"month": "2026-06"})

    by_id = {item["merchant_id"]: item for item in body["items"]}
    assert body["month"] == "2026-06"
    assert by_id[merchant_id] == {
        "merchant_id": merchant_id, "merchant_name": shop["merchant"]["name"], "status": "open",
        "finalized_at": None, **totals(1, 1500, -1, -1500),
    }
    assert by_id[other["merchant"]] | {"merchant_name": None} == {
        "merchant_id": other["merchant"], "merchant_name": None, "status": "open", "finalized_at": None,
        **totals(1, 999),
    }
    assert by_id[idle["id"]]["status"] == "open" and by_id[idle["id"]]["count"] == 0
    assert body["totals"] == totals(2, 2499, -1, -1500)
    for item in body["items"]:
        statement = await api.ok("GET", statement_path(item["merchant_id"], "2026-06"), admin)
        assert {key: item[key] for key in statement["totals"]} == statement["totals"]

    may_body = await api.ok("GET", "/api/v1/settlements", admin, params={"month": "2026-05"})
    may_item = next(item for item in may_body["items"] if item["merchant_id"] == merchant_id)
    assert may_item["status"] == "finalized" and may_item["count"] == 2 and may_item["amount_fen"] == 2300

    raw, headers = await download(api, "/api/v1/settlements", admin, month="2026-06")
    assert headers["Content-Disposition"] == 'attachment; filename="settlements-2026-06.csv"'
    rows = read_csv(raw)
    assert rows == [{key: as_text(value) for key, value in item.items()} for item in body["items"]]


async def test_the_months_settlement_is_for_bank_staff(api, shop):
    for role in ("admin", "operator", "auditor"):
        await api.ok("GET", "/api/v1/settlements", await api.staff(role), params={"month": "2026-06"})
    for token in (shop["manager"], shop["cashiers"]["a"], shop["session"]):
        status, _ = await api.call("GET", "/api/v1/settlements", token, params={"month": "2026-06"})
        assert status == 403
    auditor = await api.staff("auditor")
    status, body = await api.call("GET", "/api/v1/settlements", auditor)
    assert status == 400 and "month" in body["error"]["details"]["fields"]
    status, body = await api.call("GET", "/api/v1/settlements", auditor, params={"month": "1999-12"})
    assert status == 400 and "month" in body["error"]["details"]["fields"]
