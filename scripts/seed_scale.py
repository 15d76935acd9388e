"""Fill a program with N clients (default 1,000,000) and a year of points events, with COPY and a progress bar,
then time tier evaluation and a client's points; then M partner merchants and about a million redemptions of
this year within every quota, cap and capacity, and time a merchant's usage, a month's settlement and the usage
report; and print the figures.

    DATABASE_URL=postgresql://... PERKS_SECRET=... python scripts/seed_scale.py [--clients N] [--events-per-client K]
        [--merchants M] [--redemptions R]

Clients are ``SCALE0000001``...; seeding again adds only what is missing. Without DATABASE_URL it uses the
embedded server under PERKS_DATA_DIR. The bulk rows are written with COPY, not through the API; one audit entry
per step records what was seeded. Merchants (``SCALE merchant 0001``...), their stores, agreements and cashiers,
and the redemptions with their vouchers and usage counters, are written with set-based SQL."""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from uuid import uuid4

import asyncpg
from tqdm import tqdm

from perks.audit import service as audit
from perks.catalogue import service as catalogue
from perks.core.auth import SYSTEM
from perks.core.config import Config
from perks.core.db import connect, resolve_database_url
from perks.core.errors import ApiError
from perks.core.migrate import migrate_url
from perks.core.passwords import hash_password_sync
from perks.merchants.service import merchant_usage
from perks.points import evaluation, events, rules
from perks.settlement.periods import Month
from perks.reports.service import usage_report
from perks.settlement.service import month_settlement
from perks.vouchers.keys import ensure_active_key

TIERS = [("basic", "普卡", 100, 0), ("silver", "银卡", 200, 10_000), ("gold", "金卡", 300, 40_000),
         ("platinum", "白金卡", 400, 200_000)]
RULES = {"deposit": Decimal("0.01"), "wealth": Decimal("0.05"), "insurance": Decimal("0.2")}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
CHUNK = 50_000

CREATE_CLIENT_STAGE = """
CREATE TEMPORARY TABLE scale_clients (external_ref text, name text, birthday date) ON COMMIT DROP
"""
INSERT_CLIENTS = """
INSERT INTO clients (external_ref, name, birthday) SELECT external_ref, name, birthday FROM scale_clients
ON CONFLICT (external_ref) DO NOTHING
"""
SCALE_CLIENTS = "SELECT id, external_ref FROM clients WHERE external_ref LIKE 'SCALE%' ORDER BY external_ref"
SEEDED_EVENTS = "SELECT count(*) FROM points_events WHERE event_ref LIKE 'SCALE-%'"


def bar(total: int, desc: str, unit: str = " rows") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr)


async def seed_catalogue(conn: asyncpg.Connection) -> None:
    for code, name, rank, min_points in TIERS:
        try:
            await catalogue.create_tier(conn, SYSTEM, code=code, name=name, rank=rank, min_points=min_points)
        except ApiError:
            pass  # already there (seeded before)
    for source, rate in RULES.items():
        await rules.put_rule(conn, SYSTEM, source, rate)


def client_rows(count: int, rng: random.Random) -> Iterator[tuple[str, str, date]]:
    for n in range(1, count + 1):
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
        yield f"SCALE{n:07d}", name, date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))


async def seed_clients(conn: asyncpg.Connection, count: int, rng: random.Random) -> int:
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute(CREATE_CLIENT_STAGE)
        with bar(count, "clients") as progress:
            chunk: list[Any] = []
            for row in client_rows(count, rng):
                chunk.append(row)
                if len(chunk) == CHUNK:
                    await conn.copy_records_to_table("scale_clients", records=chunk)
                    progress.update(len(chunk))
                    chunk = []
            if chunk:
                await conn.copy_records_to_table("scale_clients", records=chunk)
                progress.update(len(chunk))
        status = await conn.execute(INSERT_CLIENTS)
        created = int(status.split()[-1])
        await audit.record(conn, SYSTEM, "scale.seed_clients", "scale_seed", "clients", None, {"created": created})
    print(f"clients: {created:,} created ({count:,} wanted) in {time.monotonic() - started:.1f} s")
    return created


def event_rows(clients: list[asyncpg.Record], per_client: int, now: datetime, rng: random.Random,
               batch_id: Any) -> Iterator[tuple[Any, ...]]:
    sources = list(RULES)
    for client in clients:
        # Most clients are modest savers; a few are very rich, so that every tier is reached by someone.
        scale = rng.choice((1, 1, 1, 1, 3, 10, 50))
        for k in range(per_client):
            source = sources[k % len(sources)]
            amount_fen = rng.randrange(1_000, 1_000_000) * scale
            occurred_at = now - timedelta(seconds=rng.randrange(365 * 86400))
            points = rules.points_for(amount_fen, RULES[source])
            yield (f"SCALE-{client['external_ref']}-{k}", client["id"], source, amount_fen, points, occurred_at,
                   batch_id, now)


async def seed_events(conn: asyncpg.Connection, per_client: int, now: datetime, rng: random.Random) -> int:
    if await conn.fetchval(SEEDED_EVENTS):
        print("events: already seeded")
        return 0
    clients = await conn.fetch(SCALE_CLIENTS)
    total = len(clients) * per_client
    started = time.monotonic()
    batch_id = uuid4()
    columns = ("event_ref", "client_id", "source", "amount_fen", "points", "occurred_at", "batch_id", "ingested_at")
    async with conn.transaction():
        with bar(total, "points events") as progress:
            chunk: list[Any] = []
            for row in event_rows(clients, per_client, now, rng, batch_id):
                chunk.append(row)
                if len(chunk) == CHUNK:
                    await conn.copy_records_to_table("points_events", records=chunk, columns=columns)
                    progress.update(len(chunk))
                    chunk = []
            if chunk:
                await conn.copy_records_to_table("points_events", records=chunk, columns=columns)
                progress.update(len(chunk))
        await audit.record(conn, SYSTEM, "points.ingest", "points_batch", batch_id, None,
                           {"batch_id": str(batch_id), "received": total, "new": total, "known": 0,
                            "origin": "scripts/seed_scale.py"})
    print(f"events: {total:,} in {time.monotonic() - started:.1f} s")
    return total


async def measure(conn: asyncpg.Connection, config: Config) -> None:
    started = time.monotonic()
    await conn.execute("VACUUM ANALYZE clients")
    await conn.execute("VACUUM ANALYZE points_events")
    print(f"vacuum analyze: {time.monotonic() - started:.1f} s")
    for run in ("first", "second"):
        started = time.monotonic()
        result = await evaluation.evaluate_tiers(conn, SYSTEM, datetime.now(timezone.utc), config.timezone)
        print(f"tiers evaluate ({run} run): {result['evaluated']:,} evaluated, {result['changed']:,} changed "
              f"in {time.monotonic() - started:.2f} s")
    spread = await conn.fetch("SELECT tier_code, count(*) FROM clients GROUP BY 1 ORDER BY 2 DESC")
    print("tiers: " + ", ".join(f"{row['tier_code']}={row['count']:,}" for row in spread))
    client_id = await conn.fetchval("SELECT id FROM clients WHERE external_ref = 'SCALE0500000'") or \
        await conn.fetchval("SELECT id FROM clients ORDER BY external_ref LIMIT 1")
    started = time.perf_counter()
    for _ in range(100):
        await events.client_points(conn, client_id, datetime.now(timezone.utc), config.timezone)
    print(f"client points: {(time.perf_counter() - started) * 10:.2f} ms each (mean of 100)")

# ---- merchants and redemptions ---------------------------------------------------------------

# (code, name, category, unit price in fen, {tier: (yearly_quota, monthly_cap)}); None = unlimited.
PERKS = [
    ("coffee", "咖啡", "餐饮", 2_500, {"basic": (6, 1), "silver": (12, 2), "gold": (24, 4), "platinum": (None, None)}),
    ("movie", "电影票", "娱乐", 4_000, {"basic": (2, 1), "silver": (4, 1), "gold": (12, 2), "platinum": (24, 4)}),
    ("car_wash", "洗车", "出行", 3_000, {"silver": (4, 1), "gold": (8, 2), "platinum": (12, None)}),
    ("lounge", "机场贵宾厅", "出行", 15_000, {"gold": (6, None), "platinum": (None, None)}),
    ("health_check", "体检", "健康", 30_000, {"platinum": (1, 1)}),
]
CATEGORIES = ["餐饮", "娱乐", "出行", "健康"]
CITIES = ["上海", "北京", "深圳", "杭州", "成都", "武汉"]
CANDIDATE_FACTOR = 1.6  # candidates drawn per wanted redemption; the rules then drop the excess
VOID_SHARE = 0.02
INSERT_CHUNK = 100_000

SEEDED_MERCHANTS = "SELECT count(*) FROM merchants WHERE name LIKE 'SCALE merchant %'"
SET_SEED = "SELECT setseed($1)"
INSERT_MERCHANTS = """
INSERT INTO merchants (name, category, city)
SELECT 'SCALE merchant ' || lpad(n::text, 4, '0'), ($2::text[])[1 + n % cardinality($2)],
       ($3::text[])[1 + n % cardinality($3)]
FROM generate_series(1, $1) n
"""
INSERT_STORES = """
INSERT INTO stores (merchant_id, name, address)
SELECT m.id, m.name || ' store ' || s, 'SCALE address ' || s
FROM merchants m CROSS JOIN generate_series(1, 2) s
WHERE m.name LIKE 'SCALE merchant %'
"""
# One cashier per store: a cashier redeems at its own store only, so each store needs one for its redemptions.
INSERT_CASHIERS = """
INSERT INTO users (username, password_hash, role, merchant_id, store_id)
SELECT 'scale.cashier.' || right(m.name, 4) || '.' || right(s.name, 1), $1, 'cashier', m.id, s.id
FROM merchants m JOIN stores s ON s.merchant_id = m.id
WHERE m.name LIKE 'SCALE merchant %'
"""
# About 60% of the merchants honour each perk; 12% of agreements have no cap, 8% a tight one, the rest ample.
INSERT_AGREEMENTS = """
INSERT INTO agreements (merchant_id, perk_code, yearly_capacity, unit_price_fen)
SELECT merchant_id, perk_code,
       CASE WHEN r < 0.12 THEN NULL WHEN r < 0.20 THEN $3::integer ELSE $2::integer END,
       (price * (0.8 + 0.4 * q) / 100)::bigint * 100
FROM (SELECT m.id AS merchant_id, p.code AS perk_code, p.price, random() AS r, random() AS q, random() AS pick
      FROM merchants m CROSS JOIN unnest($1::text[], $4::bigint[]) AS p (code, price)
      WHERE m.name LIKE 'SCALE merchant %') drawn
WHERE pick < 0.6
"""


async def seed_perks(conn: asyncpg.Connection) -> None:
    """The perks and their grants per tier; a perk already there keeps its grants."""
    for code, name, category, _price, grants in PERKS:
        try:
            await catalogue.create_perk(conn, SYSTEM, code=code, name=name, category=category)
        except ApiError:
            continue  # seeded before, with its grants
        for tier, (quota, cap) in grants.items():
            await catalogue.put_entitlement(conn, SYSTEM, tier, code, yearly_quota=quota, monthly_cap=cap)


async def seed_merchants(conn: asyncpg.Connection, count: int, redemptions: int, seed: int) -> None:
    await seed_perks(conn)
    if await conn.fetchval(SEEDED_MERCHANTS):
        print("merchants: already seeded")
        return
    started = time.monotonic()
    # Ample is far above an agreement's likely share; tight is below it, so that some merchants sell out.
    ample = max(100, redemptions * 4 // max(count, 1))
    tight = max(10, redemptions // (max(count, 1) * 4))
    # Computed once: argon2 is slow on purpose. Nobody logs in as these cashiers, so the password is thrown away.
    password_hash = hash_password_sync(secrets.token_urlsafe(24))
    codes, prices = [p[0] for p in PERKS], [p[3] for p in PERKS]
    async with conn.transaction():
        await conn.execute(SET_SEED, (seed % 1000) / 1000)
        with bar(4, "merchants", unit=" steps") as progress:
            merchants = int((await conn.execute(INSERT_MERCHANTS, count, CATEGORIES, CITIES)).split()[-1])
            progress.update()
            stores = int((await conn.execute(INSERT_STORES)).split()[-1])
            progress.update()
            cashiers = int((await conn.execute(INSERT_CASHIERS, password_hash)).split()[-1])
            progress.update()
            agreements = int((await conn.execute(INSERT_AGREEMENTS, codes, ample, tight, prices)).split()[-1])
            progress.update()
        after = {"merchants": merchants, "stores": stores, "cashiers": cashiers, "agreements": agreements,
                 "ample_capacity": ample, "tight_capacity": tight}
        await audit.record(conn, SYSTEM, "scale.seed_merchants", "scale_seed", "merchants", None, after)
    print(f"merchants: {merchants:,} merchants, {stores:,} stores, {cashiers:,} cashiers, {agreements:,} agreements "
          f"in {time.monotonic() - started:.1f} s")


SEEDED_REDEMPTIONS = "SELECT count(*) FROM vouchers WHERE token = 'seeded'"
# What each tier may redeem: perks it is granted (not birthday ones) that some seeded merchant honours.
CREATE_TIER_PERKS = """
CREATE TEMPORARY TABLE scale_tier_perks ON COMMIT DROP AS
SELECT e.tier_code, row_number() OVER (PARTITION BY e.tier_code ORDER BY e.perk_code) AS n,
       e.perk_code, e.yearly_quota, e.monthly_cap, p.voucher_ttl_seconds
FROM entitlements e JOIN perks p ON p.code = e.perk_code
WHERE NOT p.birthday_only AND (e.yearly_quota IS NULL OR e.yearly_quota > 0)
  AND EXISTS (SELECT 1 FROM agreements a JOIN merchants m ON m.id = a.merchant_id
              WHERE a.perk_code = e.perk_code AND m.status = 'active' AND m.name LIKE 'SCALE merchant %')
"""
CREATE_ELIGIBLE = """
CREATE TEMPORARY TABLE scale_eligible ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY c.id) AS n, c.id AS client_id, c.tier_code,
       (SELECT count(*) FROM scale_tier_perks t WHERE t.tier_code = c.tier_code) AS perks
FROM clients c
WHERE c.external_ref LIKE 'SCALE%' AND c.status = 'active'
  AND EXISTS (SELECT 1 FROM scale_tier_perks t WHERE t.tier_code = c.tier_code)
"""
# Where a perk is redeemed: each store of a merchant that honours it, with that store's cashier.
CREATE_OUTLETS = """
CREATE TEMPORARY TABLE scale_outlets ON COMMIT DROP AS
SELECT a.perk_code, row_number() OVER (PARTITION BY a.perk_code ORDER BY m.name, s.name) AS n,
       count(*) OVER (PARTITION BY a.perk_code) AS outlets,
       a.merchant_id, s.id AS store_id, u.id AS cashier_id, a.unit_price_fen, a.yearly_capacity
FROM agreements a
JOIN merchants m ON m.id = a.merchant_id AND m.status = 'active' AND m.name LIKE 'SCALE merchant %'
JOIN stores s ON s.merchant_id = m.id
JOIN users u ON u.store_id = s.id AND u.role = 'cashier' AND u.username LIKE 'scale.cashier.%'
"""
# Random candidates: a client, one of its tier's perks, an outlet (skewed, so that some merchants are busy) and
# an instant of this quota year before now.
CREATE_CANDIDATES = """
CREATE TEMPORARY TABLE scale_candidates ON COMMIT DROP AS
WITH draws AS (
    SELECT 1 + floor(random() * $2)::bigint AS c, random() AS pr, random() AS orr, random() AS tr
    FROM generate_series(1, $1)
), picked AS (
    SELECT e.client_id, e.tier_code, t.perk_code, t.yearly_quota, t.monthly_cap, t.voucher_ttl_seconds, d.orr,
           $3::timestamptz + d.tr * ($4::timestamptz - $3::timestamptz) AS redeemed_at
    FROM draws d
    JOIN scale_eligible e ON e.n = d.c
    JOIN scale_tier_perks t ON t.tier_code = e.tier_code AND t.n = 1 + floor(d.pr * e.perks)::bigint
), counted AS (
    SELECT p.*, k.outlets FROM picked p
    JOIN (SELECT DISTINCT perk_code, outlets FROM scale_outlets) k ON k.perk_code = p.perk_code
)
SELECT c.client_id, c.tier_code, c.perk_code, c.yearly_quota, c.monthly_cap, c.voucher_ttl_seconds, c.redeemed_at,
       o.merchant_id, o.store_id, o.cashier_id, o.unit_price_fen, o.yearly_capacity,
       extract(year FROM c.redeemed_at AT TIME ZONE $5)::integer AS quota_year,
       extract(month FROM c.redeemed_at AT TIME ZONE $5)::integer AS quota_month
FROM counted c
JOIN scale_outlets o ON o.perk_code = c.perk_code AND o.n = 1 + floor(power(c.orr, 2) * c.outlets)::bigint
"""
# The program's rules, in the order a real stream of redemptions meets them: the monthly cap, then the yearly
# quota, then the merchant's capacity (each only drops rows, so the earlier limits still hold); then a random
# sample of the wanted size (dropping more rows keeps every limit), 2% of it voided.
CREATE_KEPT = """
CREATE TEMPORARY TABLE scale_kept ON COMMIT DROP AS
WITH monthly AS (
    SELECT c.*, row_number() OVER (PARTITION BY client_id, perk_code, quota_year, quota_month
                                   ORDER BY redeemed_at) AS in_month
    FROM scale_candidates c
), yearly AS (
    SELECT m.*, row_number() OVER (PARTITION BY client_id, perk_code, quota_year ORDER BY redeemed_at) AS in_year
    FROM monthly m WHERE monthly_cap IS NULL OR in_month <= monthly_cap
), capacity AS (
    SELECT y.*, row_number() OVER (PARTITION BY merchant_id, perk_code, quota_year ORDER BY redeemed_at) AS at_merchant
    FROM yearly y WHERE yearly_quota IS NULL OR in_year <= yearly_quota
), sample AS (
    SELECT * FROM capacity WHERE yearly_capacity IS NULL OR at_merchant <= yearly_capacity
    ORDER BY random() LIMIT $1
)
SELECT row_number() OVER (ORDER BY redeemed_at) AS k, s.*,
       s.redeemed_at - make_interval(secs => 5 + random() * least(s.voucher_ttl_seconds - 10, 120)) AS issued_at,
       CASE WHEN random() < $2 THEN least(s.redeemed_at + random() * interval '2 days', $3::timestamptz) END
           AS voided_at
FROM sample s
"""
INSERT_VOUCHERS = """
INSERT INTO vouchers (id, client_id, perk_code, kid, token, issued_at, expires_at)
SELECT 'SC' || lpad(to_hex(k), 12, '0'), client_id, perk_code, $3, 'seeded', issued_at,
       issued_at + make_interval(secs => voucher_ttl_seconds)
FROM scale_kept WHERE k BETWEEN $1 AND $2
"""
INSERT_REDEMPTIONS = """
INSERT INTO redemptions (voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by, tier_code, redeemed_at,
                         quota_year, quota_month, unit_price_fen, status, voided_at, void_reason)
SELECT 'SC' || lpad(to_hex(k), 12, '0'), client_id, perk_code, merchant_id, store_id, cashier_id, tier_code,
       redeemed_at, quota_year, quota_month, unit_price_fen,
       CASE WHEN voided_at IS NULL THEN 'redeemed' ELSE 'voided' END, voided_at,
       CASE WHEN voided_at IS NOT NULL THEN 'SCALE: entered twice by the cashier' END
FROM scale_kept WHERE k BETWEEN $1 AND $2
"""
SET_CLIENT_YEARLY = """
INSERT INTO client_yearly_usage (client_id, perk_code, year, used)
SELECT client_id, perk_code, quota_year, count(*) FROM redemptions
WHERE status = 'redeemed' AND quota_year = $1 GROUP BY client_id, perk_code, quota_year
ON CONFLICT (client_id, perk_code, year) DO UPDATE SET used = EXCLUDED.used
"""
SET_CLIENT_MONTHLY = """
INSERT INTO client_monthly_usage (client_id, perk_code, year, month, used)
SELECT client_id, perk_code, quota_year, quota_month, count(*) FROM redemptions
WHERE status = 'redeemed' AND quota_year = $1 GROUP BY client_id, perk_code, quota_year, quota_month
ON CONFLICT (client_id, perk_code, year, month) DO UPDATE SET used = EXCLUDED.used
"""
# A merchant's use is split over capacity slots (migration 0009); the total is spread under the shares.
SET_MERCHANT_YEARLY = """
SELECT perks_spread_slots(merchant_id, perk_code, quota_year, count(*)::integer) FROM redemptions
WHERE status = 'redeemed' AND quota_year = $1 GROUP BY merchant_id, perk_code, quota_year
"""


async def seed_redemptions(conn: asyncpg.Connection, config: Config, wanted: int, seed: int) -> None:
    if await conn.fetchval(SEEDED_REDEMPTIONS):
        print("redemptions: already seeded")
        return
    kid = await ensure_active_key(conn, config)
    tz = config.timezone
    now = datetime.now(timezone.utc)
    year = now.astimezone(tz).year
    year_start = datetime(year, 1, 1, tzinfo=tz)
    # A minute's margin keeps every voucher's issue and every redemption in the past.
    until = now - timedelta(minutes=1)
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute(SET_SEED, ((seed + 500) % 1000) / 1000)
        with bar(4, "redemption candidates", unit=" steps") as progress:
            await conn.execute(CREATE_TIER_PERKS)
            await conn.execute(CREATE_ELIGIBLE)
            await conn.execute(CREATE_OUTLETS)
            eligible = await conn.fetchval("SELECT count(*) FROM scale_eligible")
            progress.update()
            drawn = int(wanted * CANDIDATE_FACTOR)
            await conn.execute(CREATE_CANDIDATES, drawn, eligible, year_start, until, tz.key)
            candidates = await conn.fetchval("SELECT count(*) FROM scale_candidates")
            progress.update()
            await conn.execute("ANALYZE scale_candidates")
            progress.update()
            await conn.execute(CREATE_KEPT, wanted, VOID_SHARE, until)
            kept = await conn.fetchval("SELECT count(*) FROM scale_kept")
            progress.update()
        with bar(kept, "redemptions") as progress:
            for first in range(1, kept + 1, INSERT_CHUNK):
                last = min(first + INSERT_CHUNK - 1, kept)
                await conn.execute(INSERT_VOUCHERS, first, last, kid)
                await conn.execute(INSERT_REDEMPTIONS, first, last)
                progress.update(last - first + 1)
        voided = await conn.fetchval("SELECT count(*) FROM scale_kept WHERE voided_at IS NOT NULL")
        with bar(3, "usage counters", unit=" tables") as progress:
            for query in (SET_CLIENT_YEARLY, SET_CLIENT_MONTHLY, SET_MERCHANT_YEARLY):
                await conn.execute(query, year)
                progress.update()
        after = {"year": year, "wanted": wanted, "candidates": candidates, "redemptions": kept, "voided": voided,
                 "eligible_clients": eligible, "kid": kid}
        await audit.record(conn, SYSTEM, "scale.seed_redemptions", "scale_seed", "redemptions", None, after)
    print(f"redemptions: {kept:,} ({voided:,} voided) of {wanted:,} wanted, from {candidates:,} candidates for "
          f"{eligible:,} clients, in {time.monotonic() - started:.1f} s")


# Each counter against its redemptions not voided (both ways), and against its limit: all five must be zero.
CHECK_INVARIANT = """
WITH live AS (SELECT * FROM redemptions WHERE status = 'redeemed' AND quota_year = $1),
cy AS (SELECT client_id, perk_code, count(*) AS n FROM live GROUP BY 1, 2),
cm AS (SELECT client_id, perk_code, quota_month AS month, count(*) AS n FROM live GROUP BY 1, 2, 3),
my AS (SELECT merchant_id, perk_code, count(*) AS n FROM live GROUP BY 1, 2)
SELECT
  (SELECT count(*) FROM (SELECT * FROM client_yearly_usage WHERE year = $1) u
   FULL JOIN cy ON cy.client_id = u.client_id AND cy.perk_code = u.perk_code
   WHERE COALESCE(u.used, 0) <> COALESCE(cy.n, 0)) AS client_yearly_mismatch,
  (SELECT count(*) FROM (SELECT * FROM client_monthly_usage WHERE year = $1) u
   FULL JOIN cm ON cm.client_id = u.client_id AND cm.perk_code = u.perk_code AND cm.month = u.month
   WHERE COALESCE(u.used, 0) <> COALESCE(cm.n, 0)) AS client_monthly_mismatch,
  (SELECT count(*) FROM (SELECT * FROM merchant_yearly_usage WHERE year = $1) u
   FULL JOIN my ON my.merchant_id = u.merchant_id AND my.perk_code = u.perk_code
   WHERE COALESCE(u.used, 0) <> COALESCE(my.n, 0)) AS merchant_yearly_mismatch,
  (SELECT count(*) FROM client_yearly_usage u
   JOIN client_monthly_usage m ON m.client_id = u.client_id AND m.perk_code = u.perk_code AND m.year = u.year
   JOIN clients c ON c.id = u.client_id
   LEFT JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = u.perk_code
   WHERE u.year = $1 AND u.used > 0 AND (e.perk_code IS NULL OR u.used > e.yearly_quota
                                         OR m.used > e.monthly_cap)) AS client_over_limit,
  (SELECT count(*) FROM merchant_yearly_usage u
   LEFT JOIN agreements a ON a.merchant_id = u.merchant_id AND a.perk_code = u.perk_code
   WHERE u.year = $1 AND u.used > 0 AND (a.perk_code IS NULL OR u.used > a.yearly_capacity)) AS merchant_over_capacity,
  (SELECT count(*) FROM live) AS redeemed,
  (SELECT count(*) FROM redemptions WHERE status = 'voided' AND quota_year = $1) AS voided
"""
BUSIEST_MERCHANT = """
SELECT merchant_id, sum(used) AS used FROM merchant_yearly_usage WHERE year = $1
GROUP BY merchant_id ORDER BY sum(used) DESC LIMIT 1
"""


async def timed(label: str, runs: int, call: Any) -> Any:
    started = time.perf_counter()
    for _ in range(runs):
        result = await call()
    print(f"{label}: {(time.perf_counter() - started) * 1000 / runs:.1f} ms each (mean of {runs})")
    return result


async def measure_redemptions(conn: asyncpg.Connection, config: Config) -> None:
    started = time.monotonic()
    for table in ("vouchers", "redemptions", "client_yearly_usage", "client_monthly_usage", "merchant_capacity_slots"):
        await conn.execute(f"VACUUM ANALYZE {table}")  # table names from the list above, never from input
    print(f"vacuum analyze (redemptions): {time.monotonic() - started:.1f} s")
    local = datetime.now(timezone.utc).astimezone(config.timezone)
    year = local.year
    started = time.perf_counter()
    check = await conn.fetchrow(CHECK_INVARIANT, year)
    print(f"invariant ({(time.perf_counter() - started):.2f} s): " + ", ".join(f"{k}={v:,}" for k, v in check.items()))
    busiest = await conn.fetchrow(BUSIEST_MERCHANT, year)
    if busiest is not None:
        usage = await timed(f"merchant usage (busiest merchant, {busiest['used']:,} used)", 20,
                            lambda: merchant_usage(conn, busiest["merchant_id"], year))
        print(f"  {len(usage['items'])} perks: " + ", ".join(
            f"{i['perk']} {i['used']:,}/{i['yearly_capacity'] if i['yearly_capacity'] is not None else '∞'}"
            for i in usage["items"]))
    month = Month(year, local.month - 1) if local.month > 1 else Month(year, 1)
    settlement = await timed(f"month settlement {month}", 5, lambda: month_settlement(conn, month))
    print(f"  {len(settlement['items']):,} merchants, totals {settlement['totals']}")
    report = await timed(f"usage report {year}", 3, lambda: usage_report(conn, year))
    print(f"  {len(report['items']):,} rows")


async def main(args: argparse.Namespace) -> None:
    config = Config.from_env()
    url = await resolve_database_url(config)
    await migrate_url(url)
    conn = await connect(url)
    rng = random.Random(args.seed)
    now = datetime.now(timezone.utc)
    try:
        await seed_catalogue(conn)
        await seed_clients(conn, args.clients, rng)
        await seed_events(conn, args.events_per_client, now, rng)
        await measure(conn, config)
        await seed_merchants(conn, args.merchants, args.redemptions, args.seed)
        await seed_redemptions(conn, config, args.redemptions, args.seed)
        await measure_redemptions(conn, config)
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--events-per-client", type=int, default=12, help="events in the last year (default 12)")
    parser.add_argument("--merchants", type=int, default=200, help="partner merchants (default 200)")
    parser.add_argument("--redemptions", type=int, default=1_000_000, help="redemptions this year (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=5, help="random seed (default 5)")
    asyncio.run(main(parser.parse_args()))
