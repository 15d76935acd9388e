"""The benchmark's product under test: a fresh database, ``perks serve`` on it, and a program set up through the
public API (and the ``perks staff create`` command for the first account, as an operator would)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

API = "/api/v1"
PASSWORD = "bench password 1"
SETUP_CONCURRENCY = 24
PERKS_PER_TIER = 8
HOT_PERK = "bench_p1"
TIER = "bench"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def perks_command() -> list[str]:
    """The ``perks`` command as a user runs it: the console script beside this Python, else ``python -m perks``."""
    script = Path(sys.executable).with_name("perks")
    return [str(script)] if script.exists() else [sys.executable, "-m", "perks"]


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, keep: bool = False) -> AsyncIterator[str]:
    """A new, empty database on the server of ``admin_url`` (dropped afterwards unless ``keep``)."""
    name = f"perks_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # a name made above, never from input
        try:
            yield with_database(admin_url, name)
        finally:
            if keep:
                print(f"kept database {name}")
            else:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Server:
    """``perks serve`` running in its own process group."""

    process: subprocess.Popen
    base_url: str
    env: dict[str, str]

    def stop(self) -> None:
        """SIGTERM the whole group; SIGKILL after 20 s."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def server_env(db_url: str, pool: int | None) -> dict[str, str]:
    """The environment of the server (and of the ``perks`` commands run against it)."""
    env = {**os.environ, "DATABASE_URL": db_url, "PERKS_SECRET": secrets.token_urlsafe(32),
           "PERKS_LOG_LEVEL": "WARNING", "PERKS_TERMINAL_RATE_LIMIT": "1000000"}
    if pool:
        env["PERKS_DB_POOL_SIZE"] = str(pool)
    return env


def start_server(db_url: str, workers: int, pool: int | None, env: dict[str, str] | None = None) -> Server:
    """Serve the product on a free port of 127.0.0.1 with ``workers`` worker processes (in ``env``, when given:
    a restart with the same secret keeps every session valid)."""
    port = free_port()
    env = dict(env) if env is not None else server_env(db_url, pool)
    command = [*perks_command(), "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    return Server(process, f"http://127.0.0.1:{port}", env)


class Http:
    """A small JSON client for the server under test (set-up only: the load comes from wrk)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        """``(status, parsed body)``."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.read()

    async def ok(self, method: str, path: str, token: str | None = None, expect: int = 200, **kwargs: Any) -> Any:
        """The body of a call that must answer ``expect``."""
        status, body = await self.call(method, path, token, **kwargs)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {str(body)[:300]}")
        return body

    async def login(self, username: str) -> str:
        """A session token for ``username``."""
        body = await self.ok("POST", f"{API}/auth/token", json={"username": username, "password": PASSWORD})
        return body["access_token"]

    async def metrics(self) -> str:
        """The /metrics text."""
        status, body = await self.call("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics: {status}")
        return body.decode() if isinstance(body, bytes) else str(body)


async def wait_ready(http: Http, server: Server, timeout: float = 120) -> None:
    """Until /readyz answers 200 (the server applied its migrations and reaches its database)."""
    async with asyncio.timeout(timeout):
        while True:
            if server.process.poll() is not None:
                raise RuntimeError("the server exited before it was ready")
            with contextlib.suppress(aiohttp.ClientError, ValueError, OSError):
                status, _ = await http.call("GET", "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.2)


async def bounded(jobs: Iterable[Any], limit: int = SETUP_CONCURRENCY) -> list[Any]:
    """Await ``jobs``, at most ``limit`` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


@dataclass
class Program:
    """What the set-up made: logins and ids the parts drive load with."""

    admin: str = ""
    perks: list[str] = field(default_factory=list)
    uniform_cashiers: list[str] = field(default_factory=list)  # one cashier at each of 16 merchants
    hot_cashiers: list[str] = field(default_factory=list)  # 16 stores of the one hot merchant
    cashier_usernames: list[str] = field(default_factory=list)
    uniform_usernames: list[str] = field(default_factory=list)  # the uniform cashiers' usernames, in their order
    clients: list[str] = field(default_factory=list)  # client ids
    sessions: list[str] = field(default_factory=list)  # a client session token per client
    # (client session, voucher id) of vouchers issued for the QR images
    qr_vouchers: list[tuple[str, str]] = field(default_factory=list)


def create_first_admin(env: dict[str, str]) -> None:
    """The first account, made with the command line (the API needs an account to start from)."""
    command = [*perks_command(), "staff", "create", "--username", "bench-admin", "--password", PASSWORD,
               "--role", "admin"]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)


async def set_up_program(http: Http, env: dict[str, str], clients: int) -> Program:
    """A tier with eight perks, 16 merchants with a store and a cashier each, one hot merchant with 16 stores and
    cashiers, and ``clients`` clients (imported as CSV) with a session each."""
    await asyncio.to_thread(create_first_admin, env)
    program = Program(admin=await http.login("bench-admin"))
    admin = program.admin
    await http.ok("POST", f"{API}/tiers", admin, 201, json={"code": TIER, "name": "Bench", "rank": 1, "min_points": 0})
    program.perks = [f"bench_p{n}" for n in range(1, PERKS_PER_TIER + 1)]
    for perk in program.perks:
        await http.ok("POST", f"{API}/perks", admin, 201,
                      json={"code": perk, "name": perk, "category": "car_wash", "voucher_ttl_seconds": 7200})
        # Quotas far above what a run uses, so that every conditional counter update is made and succeeds.
        await http.ok("PUT", f"{API}/tiers/{TIER}/entitlements/{perk}", admin,
                      json={"yearly_quota": 1_000_000, "monthly_cap": 1_000_000})

    async def merchant(name: str, stores: int) -> list[tuple[str, str]]:
        made = await http.ok("POST", f"{API}/merchants", admin, 201, json={"name": name, "category": "car_wash"})
        for perk in program.perks:
            await http.ok("PUT", f"{API}/merchants/{made['id']}/perks/{perk}", admin,
                          json={"yearly_capacity": 100_000_000, "unit_price_fen": 1500})
        cashiers = []
        for n in range(stores):
            store = await http.ok("POST", f"{API}/merchants/{made['id']}/stores", admin, 201,
                                  json={"name": f"Store {n}"})
            username = f"bench-{name.split()[-1]}-{n}"
            await http.ok("POST", f"{API}/merchants/{made['id']}/users", admin, 201,
                          json={"username": username, "password": PASSWORD, "role": "cashier",
                                "store_id": store["id"]})
            cashiers.append((username, await http.login(username)))
        return cashiers

    uniform = await bounded(merchant(f"Bench merchant m{n:02d}", 1) for n in range(16))
    hot = await merchant("Bench merchant hot", 16)
    program.uniform_cashiers = [token for group in uniform for _, token in group]
    program.hot_cashiers = [token for _, token in hot]
    program.cashier_usernames = [name for group in [*uniform, hot] for name, _ in group]
    program.uniform_usernames = [name for group in uniform for name, _ in group]

    lines = ["external_ref,name,tier"] + [f"BENCH{n:07d},罗小升,{TIER}" for n in range(clients)]
    await http.ok("POST", f"{API}/clients/import", admin, data="\n".join(lines).encode(),
                  headers={"Content-Type": "text/csv"})
    cursor: str | None = None
    while True:
        query = f"?tier={TIER}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = await http.ok("GET", f"{API}/clients{query}", admin)
        program.clients += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break

    async def session(client_id: str) -> str:
        body = await http.ok("POST", f"{API}/clients/{client_id}/sessions", admin, 201)
        return body["access_token"]

    program.sessions = await bounded(session(client_id) for client_id in program.clients)
    return program


async def issue_vouchers(http: Http, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Issue a voucher for each ``(client session, perk)``: the issued vouchers, in order."""

    async def issue(session: str, perk: str) -> dict[str, Any]:
        return await http.ok("POST", f"{API}/me/vouchers", session, 201, json={"perk": perk})

    return await bounded(issue(session, perk) for session, perk in pairs)


async def redeem_work(http: Http, program: Program, count: int, cashiers: list[str], perks: list[str],
                      seed: int) -> list[tuple[str, str, str, str]]:
    """``count`` fresh vouchers as wrk lines (a redemption each), shuffled, the cashiers taking turns.

    At most one live voucher per client and perk: the count is capped at clients × perks."""
    pairs = [(session, perk) for perk in perks for session in program.sessions][:count]
    vouchers = await issue_vouchers(http, pairs)
    random.Random(seed).shuffle(vouchers)
    return [(cashiers[n % len(cashiers)], "POST", f"{API}/merchant/redemptions", '{"token":"%s"}' % voucher["token"])
            for n, voucher in enumerate(vouchers)]


def which_wrk_hint() -> str:
    """How to install wrk where it is missing."""
    return "wrk is not installed: apt-get install -y wrk (Debian/Ubuntu), or brew install wrk (macOS)"


def have(command: str) -> bool:
    """Whether ``command`` is on PATH or is an existing file."""
    return shutil.which(command) is not None or Path(command).exists()
