"""Benchmark redeeming over HTTP: N redemptions by C concurrent terminals, then the counters checked.

Starts ``perks serve`` on a local port against a fresh database (on the server of DATABASE_URL, else on the
embedded PostgreSQL), sets up a program through the API (clients, vouchers, merchants, cashiers), fires the
redemptions, prints redemptions/s and latency percentiles, and checks that every counter equals its
redemptions and that no limit was passed. The database is dropped afterwards unless --keep.

    python scripts/bench_redeem.py -n 2000 -c 16 --merchants 4
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from perks.accounts.service import create_user
from perks.core.auth import SYSTEM
from perks.core.db import embedded_admin_url, init_connection, with_database
from perks.quotas.invariants import mismatched_counters

API = "/api/v1"
PASSWORD = "bench password 1"
SETUP_CONCURRENCY = 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(root_pid: int) -> float | None:
    """User + system CPU of a process and its children (the server's workers), from /proc; None elsewhere."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        pids = [root_pid] + [int(pid) for pid in Path(f"/proc/{root_pid}/task/{root_pid}/children").read_text().split()]
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None
    return total


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Http:
    """A small JSON client for the server under test."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, token: str | None = None, expect: int = 200, **kwargs: Any) -> Any:
        status, body = await self.call(method, path, token, **kwargs)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {body}")
        return body

    async def login(self, username: str) -> str:
        body = await self.ok("POST", f"{API}/auth/token", json={"username": username, "password": PASSWORD})
        return body["access_token"]


async def _bounded(jobs: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


async def set_up(http: Http, db_url: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    """A tier, a perk, merchants with a store and a cashier each, and one live voucher per redemption to come:
    ``[(cashier token, voucher token)]``, spread over the merchants in turn."""
    conn = await asyncpg.connect(db_url)
    try:
        await init_connection(conn)
        await create_user(conn, SYSTEM, username="bench-operator", password=PASSWORD, role="operator")
    finally:
        await conn.close()
    operator = await http.login("bench-operator")
    tier, perk = "bench", "bench_wash"
    await http.ok("POST", f"{API}/tiers", operator, 201, json={"code": tier, "name": "Bench", "rank": 1, "min_points": 0})
    await http.ok("POST", f"{API}/perks", operator, 201,
                  json={"code": perk, "name": "Wash", "category": "car_wash", "voucher_ttl_seconds": 3600})
    await http.ok("PUT", f"{API}/tiers/{tier}/entitlements/{perk}", operator,
                  json={"yearly_quota": args.quota, "monthly_cap": None})

    cashiers = []
    for index in range(args.merchants):
        merchant = await http.ok("POST", f"{API}/merchants", operator, 201,
                                 json={"name": f"Bench merchant {index}", "category": "car_wash"})
        store = await http.ok("POST", f"{API}/merchants/{merchant['id']}/stores", operator, 201, json={"name": "Main"})
        await http.ok("PUT", f"{API}/merchants/{merchant['id']}/perks/{perk}", operator,
                      json={"yearly_capacity": args.capacity, "unit_price_fen": 1500})
        user = await http.ok("POST", f"{API}/merchants/{merchant['id']}/users", operator, 201,
                             json={"username": f"bench-cashier-{index}", "password": PASSWORD, "role": "cashier",
                                   "store_id": store["id"]})
        cashiers.append(await http.login(user["username"]))

    async def voucher(index: int) -> tuple[str, str]:
        client = await http.ok("POST", f"{API}/clients", operator, 201,
                               json={"external_ref": f"B{index:07d}", "name": "罗小升", "tier": tier})
        session = await http.ok("POST", f"{API}/clients/{client['id']}/sessions", operator, 201)
        issued = await http.ok("POST", f"{API}/me/vouchers", session["access_token"], 201, json={"perk": perk})
        return cashiers[index % len(cashiers)], issued["token"]

    return await _bounded([voucher(index) for index in range(args.n)], SETUP_CONCURRENCY)


async def fire(http: Http, work: list[tuple[str, str]], args: argparse.Namespace) -> tuple[float, list[float], Counter]:
    """Every redemption once, ``args.c`` at a time: ``(seconds, latencies, outcomes)``."""
    latencies: list[float] = []
    outcomes: Counter = Counter()
    queue = iter(work)

    async def terminal() -> None:
        for cashier, token in queue:
            headers = {"Idempotency-Key": secrets.token_hex(8)} if args.idempotency else None
            started = time.perf_counter()
            status, body = await http.call("POST", f"{API}/merchant/redemptions", cashier,
                                           json={"token": token}, headers=headers)
            latencies.append(time.perf_counter() - started)
            outcomes["redeemed" if status == 201 else body["error"]["code"]] += 1

    started = time.perf_counter()
    await asyncio.gather(*(terminal() for _ in range(args.c)))
    return time.perf_counter() - started, latencies, outcomes


CHECKS = {
    "redemptions recorded": "SELECT count(*) FROM redemptions",
    "vouchers redeemed twice": "SELECT count(*) FROM (SELECT voucher_id FROM redemptions GROUP BY 1 HAVING count(*) > 1) t",
    "client quotas passed": """
        SELECT count(*) FROM client_yearly_usage u JOIN clients c ON c.id = u.client_id
        JOIN entitlements e ON e.tier_code = c.tier_code AND e.perk_code = u.perk_code
        WHERE e.yearly_quota IS NOT NULL AND u.used > e.yearly_quota""",
    "merchant capacities passed": """
        SELECT count(*) FROM merchant_yearly_usage u
        JOIN agreements a ON a.merchant_id = u.merchant_id AND a.perk_code = u.perk_code
        WHERE a.yearly_capacity IS NOT NULL AND u.used > a.yearly_capacity""",
}


async def check(db_url: str, redeemed: int) -> bool:
    """Print the invariants; whether they all hold."""
    conn = await asyncpg.connect(db_url)
    try:
        found = {name: await conn.fetchval(query) for name, query in CHECKS.items()}
        mismatches = await mismatched_counters(conn)
    finally:
        await conn.close()
    holds = (found["redemptions recorded"] == redeemed and found["vouchers redeemed twice"] == 0
             and found["client quotas passed"] == 0 and found["merchant capacities passed"] == 0 and not mismatches)
    for name, value in found.items():
        print(f"  {name}: {value}")
    print(f"  counters not matching their redemptions: {len(mismatches)}")
    print("invariants:", "hold" if holds else "BROKEN")
    return holds


async def wait_ready(http: Http, server: subprocess.Popen) -> None:
    async with asyncio.timeout(60):
        while True:
            if server.poll() is not None:
                raise RuntimeError("the server exited before it was ready")
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                status, _ = await http.call("GET", "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="perks-bench-")
            # Registered before the server starts, so it runs after the embedded server's own exit handler stops it.
            atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        admin_url = await asyncio.to_thread(embedded_admin_url, Path(data_dir))
    name = f"perks_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = with_database(admin_url, name)
    port = args.port or _free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "PERKS_SECRET": secrets.token_urlsafe(32),
           "PERKS_LOG_LEVEL": "WARNING", "PERKS_DB_POOL_SIZE": str(args.pool)}
    command = [sys.executable, "-m", "perks", "serve", "--port", str(port), "--workers", str(args.workers)]
    if args.profile:
        command[1:1] = ["-m", "cProfile", "-o", args.profile]
    server = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        connector = aiohttp.TCPConnector(limit=max(args.c, SETUP_CONCURRENCY))
        async with aiohttp.ClientSession(connector=connector) as session:
            http = Http(session, f"http://127.0.0.1:{port}")
            await wait_ready(http, server)
            print(f"setting up {args.n} vouchers at {args.merchants} merchant(s)...", flush=True)
            work = await set_up(http, db_url, args)
            print(f"redeeming: {args.n} redemptions, {args.c} concurrent terminals, {args.workers} server worker(s)"
                  f"{', with Idempotency-Key' if args.idempotency else ''}", flush=True)
            cpu_before = _cpu_seconds(server.pid)
            seconds, latencies, outcomes = await fire(http, work, args)
            cpu_after = _cpu_seconds(server.pid)
        latencies.sort()
        print(f"  {len(latencies) / seconds:,.0f} requests/s, {outcomes['redeemed'] / seconds:,.0f} redemptions/s "
              f"({seconds:.2f} s)")
        print("  latency ms: p50 {:.1f}  p95 {:.1f}  p99 {:.1f}  max {:.1f}".format(
            *(1000 * _percentile(latencies, q) for q in (0.50, 0.95, 0.99, 1.0))))
        if cpu_before is not None and cpu_after is not None:
            print(f"  server CPU: {1000 * (cpu_after - cpu_before) / len(latencies):.2f} ms per request")
        print("  outcomes:", dict(outcomes))
        holds = await check(db_url, outcomes["redeemed"])
        return 0 if holds else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
        await admin.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="redemptions to fire (one voucher each; default 2000)")
    parser.add_argument("-c", type=int, default=16, help="concurrent terminals (default 16)")
    parser.add_argument("--merchants", type=int, default=4, help="merchants sharing the load (default 4)")
    parser.add_argument("--capacity", type=int, default=None, help="each merchant's yearly capacity (default: none)")
    parser.add_argument("--quota", type=int, default=5, help="the yearly quota of the perk (default 5)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--pool", type=int, default=20, help="database connections per worker (default 20)")
    parser.add_argument("--idempotency", action="store_true", help="send an Idempotency-Key with every request")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    parser.add_argument("--data-dir", help="embedded PostgreSQL's data directory, without DATABASE_URL (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's database")
    parser.add_argument("--profile", help="run the server under cProfile, writing its statistics to this file")
    return parser


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parser().parse_args())))
