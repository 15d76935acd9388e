"""The bank-side batch part of ``scripts/bench``: on a fresh database filled by ``scripts/seed_scale.py`` (its
million-client program by default, ``--scale`` for fewer), time tier evaluation, a month's settlement and a
statement, and the points import against ``psql \\copy`` of the same file."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench_report import Row
from bench_server import fresh_database, perks_command, server_env
from bench_tools import PSQL

import seed_scale
from perks.core.auth import SYSTEM
from perks.core.config import Config
from perks.core.db import connect
from perks.core.migrate import migrate_url
from perks.points import evaluation
from perks.settlement.periods import Month
from perks.settlement.service import get_statement, month_settlement

EVENTS_PER_CLIENT = 12
BUSIEST_MONTH = """
SELECT quota_year, quota_month, count(*) FROM redemptions GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1
"""
BUSIEST_MERCHANT_IN = """
SELECT merchant_id FROM redemptions WHERE quota_year = $1 AND quota_month = $2
GROUP BY 1 ORDER BY count(*) DESC LIMIT 1
"""
COPY_TABLE = """
CREATE TABLE bench_copy_points (event_ref text, client_external_ref text, source text, amount_fen bigint,
                                occurred_at timestamptz)
"""
# The database's own floor for the import's work: the copied rows written into points_events (its two indexes
# over a year of events) by one INSERT with the import's joins, then rolled back. New references keep it clear of
# the rows the import wrote.
FLOOR_INSERT = """
BEGIN;
INSERT INTO points_events (event_ref, client_id, source, amount_fen, points, occurred_at, batch_id, ingested_at)
SELECT b.event_ref || '-floor', c.id, r.source, b.amount_fen, floor(b.amount_fen * r.points_per_yuan / 100)::bigint,
       b.occurred_at, gen_random_uuid(), now()
FROM bench_copy_points b
JOIN clients c ON c.external_ref = b.client_external_ref
JOIN points_rules r ON r.source = b.source
ORDER BY c.id, b.occurred_at;
ROLLBACK;
"""


async def seed_clients(db_url: str, scale: int) -> None:
    """The seed_scale program's clients and a year of their points events."""
    await migrate_url(db_url)
    conn = await connect(db_url)
    rng = random.Random(5)
    try:
        await seed_scale.seed_catalogue(conn)
        await seed_scale.seed_clients(conn, scale, rng)
        await seed_scale.seed_events(conn, EVENTS_PER_CLIENT, datetime.now(timezone.utc), rng)
        for table in ("clients", "points_events"):
            await conn.execute(f"VACUUM ANALYZE {table}")  # names from the list above
        # The seed's gigabytes still being written out would otherwise be timed as the evaluation's: a bank's
        # evaluation runs on a database at rest.
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def seed_redemptions(db_url: str, config: Config, scale: int) -> None:
    """The seed_scale program's merchants and about ``scale`` redemptions (clients need their tiers first)."""
    conn = await connect(db_url)
    try:
        await seed_scale.seed_merchants(conn, max(4, scale // 5000), scale, 5)
        await seed_scale.seed_redemptions(conn, config, scale, 5)
        for table in ("vouchers", "redemptions"):
            await conn.execute(f"VACUUM ANALYZE {table}")  # names from the list above
    finally:
        await conn.close()


def points_file(path: Path, external_refs: list[str], count: int) -> Path:
    """A points CSV of ``count`` new events of existing clients, in the import's format."""
    rng = random.Random(11)
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    sources = ("deposit", "wealth", "insurance")
    with path.open("w") as out:
        out.write("event_ref,client_external_ref,source,amount_fen,occurred_at\n")
        for n in range(count):
            at = (now - timedelta(seconds=rng.randrange(300 * 86400))).isoformat()
            out.write(f"BENCH-{n},{rng.choice(external_refs)},{sources[n % 3]},{rng.randrange(1000, 10**6)},{at}\n")
    return path


async def batch_rows(admin_url: str, scale: int, keep: bool, workdir: Path) -> list[Row]:
    """Seed, then time each batch job: the benchmark's rows."""
    rows: list[Row] = []
    async with fresh_database(admin_url, keep) as db_url:
        env = server_env(db_url, None)
        config = Config.from_env({"DATABASE_URL": db_url, "PERKS_SECRET": env["PERKS_SECRET"]})
        started = time.monotonic()
        await seed_clients(db_url, scale)
        print(f"  seeded {scale:,} clients and {scale * EVENTS_PER_CLIENT:,} points events in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        conn = await connect(db_url)
        try:
            rows += await time_evaluation(conn, config, scale)
            started = time.monotonic()
            await seed_redemptions(db_url, config, scale)
            print(f"  seeded the redemptions in {time.monotonic() - started:.0f} s", flush=True)
            rows += await time_settlement(conn)
            refs = [r["external_ref"] for r in await conn.fetch(
                "SELECT external_ref FROM clients WHERE external_ref LIKE 'SCALE%' LIMIT 10000")]
            await conn.execute(COPY_TABLE)
        finally:
            await conn.close()
        rows += time_import(db_url, env, points_file(workdir / "points.csv", refs, scale), scale)
    return rows


async def time_evaluation(conn: Any, config: Config, scale: int) -> list[Row]:
    """Tier evaluation of every client: the first run (most clients move) and a second (nothing to do)."""
    rows = []
    for run in ("first", "second"):
        started = time.perf_counter()
        result = await evaluation.evaluate_tiers(conn, SYSTEM, datetime.now(timezone.utc), config.timezone)
        seconds = time.perf_counter() - started
        print(f"  tier evaluation ({run} run): {result['changed']:,} of {result['evaluated']:,} changed in "
              f"{seconds:.2f} s", flush=True)
        goal = "≤ 20 s" if run == "first" and scale >= 1_000_000 else ""
        rows.append(Row("batch", f"tier evaluation, {run} run, s", seconds, "s", None, "", None, goal,
                        seconds <= 20 if goal else None,
                        f"{result['evaluated']:,} clients, {result['changed']:,} changed (with history rows and "
                        "outbox events)" + ("" if goal else "; goal is for 1,000,000 clients")))
    return rows


async def time_settlement(conn: Any) -> list[Row]:
    """The busiest month's settlement of every merchant, and its busiest merchant's statement."""
    year, month, count = await conn.fetchrow(BUSIEST_MONTH)
    total = await conn.fetchval("SELECT count(*) FROM redemptions")
    merchant_id = await conn.fetchval(BUSIEST_MERCHANT_IN, year, month)
    period = Month(year, month)
    timings = []
    for label, work in (("month's settlement, every merchant", lambda: month_settlement(conn, period)),
                        ("statement of the busiest merchant", lambda: get_statement(conn, merchant_id, period))):
        await work()  # warm
        started = time.perf_counter()
        for _ in range(3):
            await work()
        seconds = (time.perf_counter() - started) / 3
        print(f"  {label} {period}: {seconds * 1000:.0f} ms", flush=True)
        timings.append(Row("batch", f"{label}, ms", seconds * 1000, "ms", None, "", None, "≤ 2 s", seconds <= 2,
                           f"{period}: {count:,} of {total:,} redemptions; mean of 3"))
    return timings


def time_import(db_url: str, env: dict[str, str], path: Path, count: int) -> list[Row]:
    """``perks points import FILE`` against ``psql \\copy`` of the same file into a plain table, and against the
    database's floor: that copy then written into points_events by one INSERT."""
    started = time.perf_counter()
    subprocess.run([PSQL, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy bench_copy_points FROM '{path}' WITH (FORMAT csv, HEADER true)", db_url],
                   check=True, capture_output=True, text=True)
    copy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    done = subprocess.run([*perks_command(), "points", "import", str(path), "--no-progress"], env=env,
                          capture_output=True, text=True)
    import_seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-500:], done.stderr[-1500:], file=sys.stderr)
        return [Row("batch", "points import rows/s", None, "/s", count / copy_seconds, "psql \\copy /s", None,
                    "≥ 0.5×", False, f"perks points import failed ({done.returncode})")]
    started = time.perf_counter()
    subprocess.run([PSQL, "-q", "-v", "ON_ERROR_STOP=1", "-c", FLOOR_INSERT, db_url], check=True, capture_output=True,
                   text=True)
    floor_seconds = copy_seconds + time.perf_counter() - started
    rate, ref, floor = count / import_seconds, count / copy_seconds, count / floor_seconds
    print(f"  points import: {import_seconds:.2f} s; psql \\copy: {copy_seconds:.2f} s; \\copy then INSERT into "
          f"points_events: {floor_seconds:.2f} s", flush=True)
    return [Row("batch", "points import rows/s", rate, "/s", ref, "psql \\copy /s", rate / ref, "≥ 0.5×",
                rate / ref >= 0.5, f"{count:,} events; the command as run, start-up included; \\copy into a plain "
                "table, no index"),
            Row("batch", "points import rows/s, against the database's floor", rate, "/s", floor,
                "\\copy + INSERT /s", rate / floor, "", None,
                "the same rows by psql into points_events itself (its two indexes), the import's joins, no checks")]
