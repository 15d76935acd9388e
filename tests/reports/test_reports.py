"""Reports: usage per merchant, perk and month; capacity use; quota use by tier; warning signs with evidence."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support import unique

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def config(config):
    """Sessions that outlast the clock's jumps across a year."""
    return dataclasses.replace(config, session_ttl_seconds=800 * 86400, client_session_ttl_seconds=800 * 86400)


def at(month: int, day: int, hour: int = 12, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


class Program:
    """Builds a program through the API and redeems at chosen instants."""

    def __init__(self, api, clock):
        self.api, self.clock = api, clock
        self.cashiers: dict[str, str] = {}

    async def merchant(self, name: str, agreements: dict[str, tuple[int | None, int]]) -> dict:
        merchant = await self.api.merchant(name=name)
        store = await self.api.store(merchant["id"], name=f"{name}店")
        for perk, (capacity, price) in agreements.items():
            await self.api.agree(merchant["id"], perk, capacity, price)
        _, self.cashiers[merchant["id"]] = await self.api.merchant_user(merchant["id"], "cashier", store["id"])
        return merchant

    async def redeem(self, session: str, perk: str, merchant: dict, when: datetime) -> dict:
        self.clock.set(when)
        voucher = await self.api.voucher(session, perk)
        status, body = await self.api.redeem(self.cashiers[merchant["id"]], voucher["token"])
        assert status == 201, body
        return body


async def download(api, path: str, token: str, **params: str) -> list[dict[str, str]]:
    async with api.client.get(path, params={"format": "csv", **params},
                              headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        raw = await response.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def as_csv(items: list[dict]) -> list[dict[str, str]]:
    """Items as CSV cells: empty for null, whole numbers without a decimal point (as spreadsheets write them)."""

    def text(value) -> str:
        if value is None:
            return ""
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

    return [{key: text(value) for key, value in item.items()} for item in items]


# ---- usage, capacity, quota use --------------------------------------------------------------


@pytest.fixture
async def year_of_use(api, clock):
    """Two tiers, two perks, two merchants and a few months of redemptions (one voided, one in 2025), rated."""
    clock.set(at(1, 1, year=2025))
    gold = await api.tier(unique("gold_"), name="金卡", rank=20)
    silver = await api.tier(unique("silver_"), name="银卡", rank=10)
    coffee = await api.perk(unique("co_"), name="咖啡", category="coffee")
    wash = await api.perk(unique("wa_"), name="洗车")
    await api.entitle(gold["code"], wash["code"], 4)
    await api.entitle(gold["code"], coffee["code"], None)
    await api.entitle(silver["code"], wash["code"], 2)
    prog = Program(api, clock)
    a = await prog.merchant("A 甲洗车", {wash["code"]: (10, 1500), coffee["code"]: (None, 800)})
    b = await prog.merchant("B 乙咖啡", {coffee["code"]: (5, 900)})
    g1, g2, g3 = [await api.member(gold["code"]) for _ in range(3)]
    s1, _ = [await api.member(silver["code"]) for _ in range(2)]
    w, c = wash["code"], coffee["code"]

    await prog.redeem(g2[1], w, a, at(12, 30, year=2025))
    first = await prog.redeem(g1[1], w, a, at(1, 10))
    await api.ok("POST", f"/api/v1/me/redemptions/{first['id']}/feedback", g1[1], 201, json={"rating": 5})
    await prog.redeem(g1[1], w, a, at(1, 11))
    second = await prog.redeem(g2[1], w, a, at(2, 3))
    await api.ok("POST", f"/api/v1/me/redemptions/{second['id']}/feedback", g2[1], 201, json={"rating": 2})
    voided = await prog.redeem(s1[1], w, a, at(2, 4))
    await api.ok("POST", f"/api/v1/redemptions/{voided['id']}/void", await api.staff("operator"),
                 json={"reason": "mistake"})
    await prog.redeem(s1[1], w, a, at(2, 5))
    await prog.redeem(g1[1], c, a, at(2, 6))
    await prog.redeem(g3[1], c, b, at(3, 1))
    await prog.redeem(g1[1], c, b, at(3, 2))
    await prog.redeem(s1[1], w, a, at(3, 3))
    return {"a": a, "b": b, "wash": wash, "coffee": coffee, "gold": gold, "silver": silver}


async def test_usage_per_merchant_perk_and_month(api, year_of_use):
    a, b = year_of_use["a"], year_of_use["b"]
    w, c = year_of_use["wash"]["code"], year_of_use["coffee"]["code"]
    auditor = await api.staff("auditor")

    body = await api.ok("GET", "/api/v1/reports/usage", auditor, params={"year": "2026"})

    def row(merchant, perk, month, redeemed, voided, amount):
        return {"merchant_id": merchant["id"], "merchant_name": merchant["name"], "perk": perk, "month": month,
                "redeemed": redeemed, "voided": voided, "amount_fen": amount}

    assert body == {"year": 2026, "items": [
        row(a, c, "2026-02", 1, 0, 800),
        row(a, w, "2026-01", 2, 0, 3000),
        row(a, w, "2026-02", 2, 1, 3000),
        row(a, w, "2026-03", 1, 0, 1500),
        row(b, c, "2026-03", 2, 0, 1800),
    ]}
    # The clock stands in 2026: the default year.
    assert await api.ok("GET", "/api/v1/reports/usage", auditor) == body
    last_year = await api.ok("GET", "/api/v1/reports/usage", auditor, params={"year": "2025"})
    assert last_year["items"] == [row(a, w, "2025-12", 1, 0, 1500)]
    # In CSV, the month is a year and a month number (a spreadsheet would make `2026-02` a date).
    rows = await download(api, "/api/v1/reports/usage", auditor, year="2026")
    assert rows == [
        {"merchant_id": item["merchant_id"], "merchant_name": item["merchant_name"], "perk": item["perk"],
         "year": "2026", "month": str(int(item["month"][5:])), "redeemed": str(item["redeemed"]),
         "voided": str(item["voided"]), "amount_fen": str(item["amount_fen"])}
        for item in body["items"]
    ]
    assert rows[0]["merchant_name"] == "A 甲洗车" and rows[0]["month"] == "2"


async def test_capacity_use_with_ratings(api, year_of_use):
    a, b = year_of_use["a"], year_of_use["b"]
    w, c = year_of_use["wash"]["code"], year_of_use["coffee"]["code"]
    operator = await api.staff("operator")

    body = await api.ok("GET", "/api/v1/reports/capacity", operator, params={"year": "2026"})

    rated = {"rating_average": 3.5, "rating_count": 2}
    unrated = {"rating_average": None, "rating_count": 0}
    assert body == {"year": 2026, "items": [
        {"merchant_id": a["id"], "merchant_name": a["name"], "perk": c, "yearly_capacity": None, "used": 1,
         "remaining": None, "used_pct": None, "unit_price_fen": 800} | rated,
        {"merchant_id": a["id"], "merchant_name": a["name"], "perk": w, "yearly_capacity": 10, "used": 5,
         "remaining": 5, "used_pct": 50.0, "unit_price_fen": 1500} | rated,
        {"merchant_id": b["id"], "merchant_name": b["name"], "perk": c, "yearly_capacity": 5, "used": 2,
         "remaining": 3, "used_pct": 40.0, "unit_price_fen": 900} | unrated,
    ]}
    rows = await download(api, "/api/v1/reports/capacity", operator, year="2026")
    assert rows == as_csv(body["items"])
    assert [(row["used_pct"], row["rating_average"]) for row in rows] == [("", "3.5"), ("50", "3.5"), ("40", "")]


async def test_quota_use_by_tier(api, year_of_use):
    gold, silver = year_of_use["gold"], year_of_use["silver"]
    wash, coffee = year_of_use["wash"], year_of_use["coffee"]
    admin = await api.staff("admin")

    body = await api.ok("GET", "/api/v1/reports/quota-use", admin, params={"year": "2026"})

    def row(tier, perk, quota, clients, promised, used, pct, using, exhausted):
        return {"tier": tier["code"], "tier_name": tier["name"], "perk": perk["code"], "perk_name": perk["name"],
                "yearly_quota": quota, "clients": clients, "promised": promised, "used": used, "used_pct": pct,
                "clients_using": using, "clients_exhausted": exhausted}

    assert body == {"year": 2026, "items": [
        row(gold, coffee, None, 3, None, 3, None, 2, 0),
        row(gold, wash, 4, 3, 12, 3, 25.0, 2, 0),
        row(silver, wash, 2, 2, 4, 2, 50.0, 1, 1),
    ]}
    assert await download(api, "/api/v1/reports/quota-use", admin, year="2026") == as_csv(body["items"])
    last_year = await api.ok("GET", "/api/v1/reports/quota-use", admin, params={"year": "2025"})
    assert [item["used"] for item in last_year["items"]] == [0, 1, 0]


@pytest.mark.parametrize("report", ["usage", "capacity", "quota-use", "anomalies"])
async def test_reports_are_for_bank_staff(api, report):
    prog = await api.program()
    path = f"/api/v1/reports/{report}"
    for role in ("admin", "operator", "auditor"):
        await api.ok("GET", path, await api.staff(role), params={"year": "2026"})
    _, session = await api.member(prog["tier"])
    for token in (prog["manager"], prog["cashier"], session):
        status, body = await api.call("GET", path, token)
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await api.call("GET", path))[0] == 401
    auditor = await api.staff("auditor")
    for year in ("abc", "1999", "10000"):
        status, body = await api.call("GET", path, auditor, params={"year": year})
        assert status == 400 and "year" in body["error"]["details"]["fields"], body
    if report != "anomalies":
        status, body = await api.call("GET", path, auditor, params={"format": "pdf"})
        assert status == 400 and "format" in body["error"]["details"]["fields"]


# ---- warning signs ---------------------------------------------------------------------------


@pytest.fixture
async def members(api, clock):
    """``make(n)``: n new clients of one tier entitled, without limits, to one perk."""
    clock.set(at(1, 1))
    tier = await api.tier()
    perk = await api.perk()
    await api.entitle(tier["code"], perk["code"], None)

    async def make(count: int, **fields) -> list[tuple[dict, str]]:
        return [await api.member(tier["code"], **fields) for _ in range(count)]

    return tier, perk["code"], make


async def redeem_on_days(prog: Program, perk: str, merchant: dict, sessions: list[str], start: datetime) -> list:
    """One redemption per session, a day apart from ``start``."""
    return [
        await prog.redeem(session, perk, merchant, start + timedelta(days=day))
        for day, session in enumerate(sessions)
    ]


async def anomalies(api, **params):
    return await api.ok("GET", "/api/v1/reports/anomalies", await api.staff("auditor"),
                        params={"year": "2026", **params})


async def test_clients_concentrating_at_a_merchant(api, clock, members):
    _, perk, make = members
    prog = Program(api, clock)
    flagged = await prog.merchant("C 集中", {perk: (None, 1000)})
    even = await prog.merchant("D 持平", {perk: (None, 1000)})
    small = await prog.merchant("E 太少", {perk: (None, 1000)})
    # C: 5 + 3 + 3 of 20 (55%). D: 4 + 3 + 3 of 20 (exactly half: not more). E: 10 of 19 (too few to judge).
    for merchant, heavy, singles in ((flagged, [5, 3, 3], 9), (even, [4, 3, 3], 10), (small, [10], 9)):
        regulars = await make(len(heavy), name="赵钱孙")
        sessions = [session for (_, session), n in zip(regulars, heavy) for _ in range(n)]
        sessions += [session for _, session in await make(singles)]
        await redeem_on_days(prog, perk, merchant, sessions, at(2, 1))
        if merchant is flagged:
            top = sorted(((n, client["id"]) for (client, _), n in zip(regulars, heavy)), key=lambda t: (-t[0], t[1]))

    body = await anomalies(api)

    assert body["found"] == {"client_concentration": 1, "repeated_same_day": 0, "capacity_early": 0}
    assert body["items"] == [{
        "kind": "client_concentration", "merchant_id": flagged["id"], "merchant_name": flagged["name"],
        "perk": None,
        "evidence": {
            "redemptions": 20,
            "top_clients": [{"client_id": client_id, "display_name": "赵*孙", "redemptions": n} for n, client_id in top],
            "top_redemptions": 11,
            "top_share_pct": 55.0,
        },
    }]
    assert body["thresholds"]["concentration_min_redemptions"] == 20
    assert (await anomalies(api, kind="repeated_same_day"))["items"] == []


async def test_repeated_redemptions_on_one_day(api, clock, members):
    _, perk, make = members
    prog = Program(api, clock)
    merchant = await prog.merchant("F 同日", {perk: (None, 1000)})
    (repeater, session), (night_owl, owl_session), (corrected, corrected_session) = await make(3, name="Alice Smith")
    first = await prog.redeem(session, perk, merchant, at(4, 2, 10, 0))
    second = await prog.redeem(session, perk, merchant, at(4, 2, 23, 30))
    # 23:30 on 2 April and 00:10 on 3 April in Shanghai: one UTC day, two days at the bank.
    await prog.redeem(owl_session, perk, merchant, at(4, 2, 23, 30))
    await prog.redeem(owl_session, perk, merchant, at(4, 3, 0, 10))
    # A repeat that was voided is a correction, not a sign.
    await prog.redeem(corrected_session, perk, merchant, at(4, 5, 9))
    mistake = await prog.redeem(corrected_session, perk, merchant, at(4, 5, 9, 1))
    await api.ok("POST", f"/api/v1/redemptions/{mistake['id']}/void", await api.staff("operator"),
                 json={"reason": "scanned twice"})

    body = await anomalies(api)

    assert body["found"] == {"client_concentration": 0, "repeated_same_day": 1, "capacity_early": 0}
    assert body["items"] == [{
        "kind": "repeated_same_day", "merchant_id": merchant["id"], "merchant_name": merchant["name"],
        "perk": None,
        "evidence": {
            "client_id": repeater["id"], "display_name": "A*********h", "date": "2026-04-02", "redemptions": 2,
            "redemption_ids": [first["id"], second["id"]], "perks": [perk, perk],
        },
    }]


async def test_capacity_used_up_early(api, clock, members):
    _, perk, make = members
    prog = Program(api, clock)
    early = await prog.merchant("G 早满", {perk: (10, 1000)})
    late = await prog.merchant("H 晚满", {perk: (3, 1000)})
    short = await prog.merchant("I 未满", {perk: (10, 1000)})
    sessions = [session for _, session in await make(9)]
    early_redemptions = await redeem_on_days(prog, perk, early, sessions, at(2, 1))
    await redeem_on_days(prog, perk, late, sessions[:2], at(2, 1))
    await prog.redeem(sessions[2], perk, late, at(10, 1))  # 3 of 3, but in October
    await redeem_on_days(prog, perk, short, sessions[:8], at(2, 1))  # 80% only

    body = await anomalies(api)

    reached_at = datetime.fromisoformat(early_redemptions[8]["redeemed_at"])
    assert reached_at == at(2, 9)
    elapsed = (reached_at - at(1, 1, 0)).total_seconds() / (365 * 86400)
    assert body["found"] == {"client_concentration": 0, "repeated_same_day": 0, "capacity_early": 1}
    [item] = body["items"]
    assert item == {
        "kind": "capacity_early", "merchant_id": early["id"], "merchant_name": early["name"], "perk": perk,
        "evidence": {"yearly_capacity": 10, "used": 9, "threshold": 9, "reached_at": item["evidence"]["reached_at"],
                     "year_elapsed_pct": round(100 * elapsed, 1)},
    }
    assert datetime.fromisoformat(item["evidence"]["reached_at"]) == reached_at
    assert item["evidence"]["year_elapsed_pct"] == 10.8  # 39.5 days of 365


async def test_a_clean_program_shows_no_warning_signs(api, clock, members):
    _, perk, make = members
    prog = Program(api, clock)
    merchant = await prog.merchant("J 正常", {perk: (100, 1000)})
    sessions = [session for _, session in await make(20)]
    await redeem_on_days(prog, perk, merchant, sessions, at(3, 1))
    await redeem_on_days(prog, perk, merchant, sessions[:5], at(5, 1))

    body = await anomalies(api)

    assert body["items"] == []
    assert body["found"] == {"client_concentration": 0, "repeated_same_day": 0, "capacity_early": 0}
    assert body["year"] == 2026


async def test_anomalies_are_limited_per_kind_worst_first(api, clock, members):
    _, perk, make = members
    prog = Program(api, clock)
    merchant = await prog.merchant("K 多次", {perk: (None, 1000)})
    (_, twice), (thrice_client, thrice) = await make(2)
    await redeem_on_days(prog, perk, merchant, [twice, twice], at(6, 1))  # different days: not a sign
    for minute in (0, 1):
        await prog.redeem(twice, perk, merchant, at(6, 10, 9, minute))
    for minute in (0, 1, 2):
        await prog.redeem(thrice, perk, merchant, at(6, 11, 9, minute))

    body = await anomalies(api, kind="repeated_same_day", limit="1")

    assert body["found"] == {"repeated_same_day": 2}
    assert [item["evidence"]["client_id"] for item in body["items"]] == [thrice_client["id"]]
    assert body["items"][0]["evidence"]["redemptions"] == 3
    status, error = await api.call("GET", "/api/v1/reports/anomalies", await api.staff("auditor"),
                                   params={"kind": "nonsense"})
    assert status == 400 and "kind" in error["error"]["details"]["fields"]
