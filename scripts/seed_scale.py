"""Fill a program with N clients (default 1,000,000) and a year of points events, with COPY and a progress bar,
then time tier evaluation and a client's points, and print the figures.

    DATABASE_URL=postgresql://... PERKS_SECRET=... python scripts/seed_scale.py [--clients N] [--events-per-client K]

Clients are ``SCALE0000001``...; seeding again adds only what is missing. Without DATABASE_URL it uses the
embedded server under PERKS_DATA_DIR. The bulk rows are written with COPY, not through the API; one audit entry
per step records what was seeded."""

from __future__ import annotations

import argparse
import asyncio
import random
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
from perks.points import evaluation, events, rules

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
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--events-per-client", type=int, default=12, help="events in the last year (default 12)")
    parser.add_argument("--seed", type=int, default=5, help="random seed (default 5)")
    asyncio.run(main(parser.parse_args()))
