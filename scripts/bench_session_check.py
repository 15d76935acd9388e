"""Measure what the per-request session check costs: one primary-key SELECT of the account's generation and status.

On a fresh database (on the server of DATABASE_URL, dropped afterwards) it times, first, the check alone against a
`SELECT 1` round trip on the same pool, one at a time and from C concurrent tasks; then `GET /api/v1/me` served
in-process over real HTTP by C concurrent clients, with the check and with it replaced by a no-op (this script's
own patch, to show the difference; the service never skips it).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python scripts/bench_session_check.py -n 3000 -c 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
from aiohttp import web

import perks.core.endpoint as endpoint_module
from perks.app import create_app
from perks.clients.service import create_client
from perks.core.auth import SYSTEM, Principal, SessionTokens, session_is_current
from perks.core.config import Config
from perks.core.db import connect, create_pool, with_database
from perks.core.migrate import migrate_url


async def _timed(n: int, concurrency: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, list[float]]:
    """``(calls per second, per-call latencies in µs)`` of ``n`` calls from ``concurrency`` tasks."""
    latencies: list[float] = []
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started), latencies


def _line(label: str, rate: float, latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return f"{label:<44} {rate:>9.0f}/s   p50 {cuts[49]:>7.0f} µs   p99 {cuts[98]:>7.0f} µs"


async def main(n: int, concurrency: int) -> None:
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        sys.exit("set DATABASE_URL to an admin URL of a PostgreSQL server")
    name = f"perks_bench_session_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        await migrate_url(url)
        await _run(url, n, concurrency)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _run(url: str, n: int, concurrency: int) -> None:
    conn = await connect(url)
    client = await create_client(conn, SYSTEM, external_ref="BENCH1", name="Bench Client")
    await conn.close()
    principal = Principal(id=client["id"], role="client")

    pool = await create_pool(url, max_size=concurrency)
    assert await session_is_current(pool, principal)
    print(f"n={n} concurrency={concurrency}")
    for tasks in (1, concurrency):
        rate, lat = await _timed(n, tasks, lambda: pool.fetchval("SELECT 1"))
        print(_line(f"SELECT 1 round trip, {tasks} task(s)", rate, lat))
        rate, lat = await _timed(n, tasks, lambda: session_is_current(pool, principal))
        print(_line(f"session check, {tasks} task(s)", rate, lat))
    await pool.close()

    secret = secrets.token_urlsafe(32)
    config = Config(database_url=url, data_dir=Path(tempfile.mkdtemp()), timezone=ZoneInfo("Asia/Shanghai"), secret=secret)
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = SessionTokens(secret).issue(principal, datetime.now(timezone.utc), 3600)
    headers = {"Authorization": f"Bearer {token}"}
    original = endpoint_module.session_is_current

    async def no_check(db: Any, who: Principal) -> bool:
        return True

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

            async def me() -> None:
                async with http.get(f"http://127.0.0.1:{port}/api/v1/me", headers=headers) as response:
                    assert response.status == 200, response.status
                    await response.read()

            await _timed(200, concurrency, me)  # warm up
            for label, check in (("GET /api/v1/me with the check", original), ("GET /api/v1/me, check patched out", no_check)):
                endpoint_module.session_is_current = check  # type: ignore[assignment]
                rate, lat = await _timed(n, concurrency, me)
                print(_line(label, rate, lat))
    finally:
        endpoint_module.session_is_current = original  # type: ignore[assignment]
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="calls per measurement")
    parser.add_argument("-c", type=int, default=16, help="concurrent tasks")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.c))
