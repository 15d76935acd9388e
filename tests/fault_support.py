"""Faults under load, shared by tests/test_faults.py and scripts/faults: a PostgreSQL of our own to restart and
crash, ``perks serve`` as a subprocess, a redemption load over the public HTTP API, and the invariants in plain SQL."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

PG_BIN = Path(os.environ.get("PERKS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "pgtest"
# A request in the gap must be answered (503) within this: acquire 5 s, connect 5 s, plus the event loop's slack.
REQUEST_BOUND_SECONDS = 12.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_postgres() -> str | None:
    """Why a PostgreSQL of our own cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"no {PG_BIN / tool} (PostgreSQL 15 server binaries; set PERKS_PG_BIN)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser"
    return None


class OwnPostgres:
    """A throw-away cluster in ``base``: initdb, start, restart fast, crash, stop. As root it runs as ``pgtest``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.log = base / "postgres.log"

    @property
    def admin_url(self) -> str:
        """The ``postgres`` database, over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """Database ``database`` of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], timeout=timeout, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=self.base)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command, stderr=done.stderr)

    def init(self) -> None:
        """Make the cluster (and, as root, the system user that owns it)."""
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "-r", "-M", PG_USER], check=True)
            os.chmod(self.base, 0o777)
            shutil.chown(self.base, PG_USER)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                  *args)

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._ctl("start")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m fast`` (a clean restart) or ``-m immediate`` (a crash, then crash recovery)."""
        self._ctl("restart", "-m", mode)

    def stop(self) -> None:
        """Stop it at once, ignoring a cluster that is not running."""
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        except subprocess.CalledProcessError:  # not running
            pass


class Serve:
    """``perks serve --workers N`` in its own process group, its output in a file."""

    def __init__(self, database_url: str, base: Path, workers: int = 2, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.base = base
        self.log = base / "serve.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PERKS_SECRET": "fault-test-secret-" + secrets.token_hex(8),
            "PERKS_DATA_DIR": str(base / "perks-data"),
            "PERKS_TERMINAL_RATE_LIMIT": "1000000",
            # INFO: the workers' "Running on" lines tell when each one serves.
            "PERKS_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "perks", "serve", "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env, cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def serving_pids(self) -> list[int]:
        """Workers that have started serving, in the order they did."""
        return [int(pid) for pid in re.findall(r"INFO (\d+) perks \[-\] =+ Running on", self.log.read_text())]

    def serving_times(self) -> dict[int, float]:
        """When each worker started serving (Unix time, from its log line)."""
        found = re.findall(r"^(\S+ \S+) INFO (\d+) perks \[-\] =+ Running on", self.log.read_text(), re.M)
        return {int(pid): datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp() for at, pid in found}

    async def wait_serving(self, workers: int, seconds: float = 60) -> None:
        """Until ``workers`` workers serve and /readyz answers 200."""
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "perks serve did not start in time"
                if len(self.serving_pids()) >= workers:
                    try:
                        async with session.get(self.url + "/readyz") as response:
                            if response.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                await asyncio.sleep(0.1)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, then the exit code (the group is killed if it does not stop in time)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill the whole process group (a finalizer: nothing is left running)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


@dataclass
class Figures:
    """What the load generator saw."""

    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    connection_errors: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    redeemed: dict[str, str] = field(default_factory=dict)  # redemption id -> voucher id, from every 201
    voucher_ids_by_redemption: dict[str, set[str]] = field(default_factory=dict)
    keyed_answers: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    readyz: list[tuple[float, int]] = field(default_factory=list)
    mints: int = 0

    def summary(self) -> str:
        """One block of figures for a person."""
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(self.statuses.items()))
        return (f"attempts {self.attempts}; {statuses}; connection errors {self.connection_errors}; "
                f"vouchers minted {self.mints}; distinct redemptions acknowledged {len(self.redeemed)}; "
                f"slowest answer {self.slowest:.2f} s; failures {len(self.failures)}")


class Load:
    """Redemptions at full speed: every voucher tried at once by keyed and unkeyed requests, then retried."""

    def __init__(self, base_url: str, program: dict[str, Any], cashiers: list[str], clients: list[str]) -> None:
        self.base_url = base_url
        self.program = program
        self.cashiers = cashiers
        self.clients = list(clients)
        self.figures = Figures()
        self.stopping = False

    async def _request(self, session: aiohttp.ClientSession, method: str, path: str, token: str,
                       json: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, Any] | None:
        """One request; None for a connection error. A 500, a 503 of another code or a hang is a failure."""
        headers = {"Authorization": f"Bearer {token}"}
        if key:
            headers["Idempotency-Key"] = key
        figures = self.figures
        figures.attempts += 1
        started = time.monotonic()
        try:
            async with session.request(method, self.base_url + path, json=json, headers=headers) as response:
                body = await response.json() if response.content_type == "application/json" else await response.text()
                status = response.status
        except asyncio.TimeoutError:
            figures.failures.append(f"{method} {path}: no answer within {REQUEST_BOUND_SECONDS} s")
            return None
        except aiohttp.ClientError:
            figures.connection_errors += 1
            return None
        finally:
            figures.slowest = max(figures.slowest, time.monotonic() - started)
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        figures.statuses[f"{status} {code}" if code else str(status)] += 1
        if status >= 500 and not (status == 503 and code == "database_unavailable"):
            figures.failures.append(f"{method} {path}: {status} {str(body)[:200]}")
        return status, body

    async def _until_answered(self, session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> tuple[int, Any] | None:
        """Retry through 503s and connection errors (the same request, the same key) until a real answer."""
        while True:
            answer = await self._request(session, *args, **kwargs)
            if answer is not None and answer[0] != 503:
                return answer
            if self.stopping and answer is None:
                return None
            await asyncio.sleep(0.05 + random.random() * 0.1)

    async def _redeem_voucher(self, session: aiohttp.ClientSession, voucher: dict[str, Any]) -> None:
        key = secrets.token_urlsafe(12)
        body = {"token": voucher["token"]}
        path = "/api/v1/merchant/redemptions"
        cashier = random.choice(self.cashiers)
        attempts = [
            self._until_answered(session, "POST", path, cashier, body, key),
            self._until_answered(session, "POST", path, cashier, body, key),
            self._until_answered(session, "POST", path, random.choice(self.cashiers), body),
            self._until_answered(session, "POST", path, random.choice(self.cashiers), body),
        ]
        answers = await asyncio.gather(*attempts)
        answers.append(await self._until_answered(session, "POST", path, cashier, body, key))  # a later retry
        keyed = [answers[0], answers[1], answers[4]]
        self.figures.keyed_answers[key] = [answer for answer in keyed if answer is not None]
        for answer in answers:
            if answer is not None and answer[0] == 201:
                self.figures.redeemed[answer[1]["id"]] = voucher["id"]
                self.figures.voucher_ids_by_redemption.setdefault(voucher["id"], set()).add(answer[1]["id"])

    async def _client_loop(self, session: aiohttp.ClientSession) -> None:
        while not self.stopping and self.clients:
            client_token = self.clients.pop(0)
            for _ in range(4):  # one more voucher than the yearly quota of 3
                if self.stopping:
                    return
                answer = await self._until_answered(session, "POST", "/api/v1/me/vouchers", client_token,
                                                    {"perk": self.program["perk"]})
                if answer is None or answer[0] != 201:
                    break
                self.figures.mints += 1
                await self._redeem_voucher(session, answer[1])

    async def probe_readyz(self, session: aiohttp.ClientSession) -> None:
        """/readyz every 50 ms, recorded with the wall-clock time."""
        while not self.stopping:
            try:
                async with session.get(self.base_url + "/readyz") as response:
                    self.figures.readyz.append((time.time(), response.status))
            except aiohttp.ClientError:
                self.figures.readyz.append((time.time(), 0))
            await asyncio.sleep(0.05)

    async def run(self, concurrency: int, until: asyncio.Future[None]) -> Figures:
        """Drive the load from ``concurrency`` connections until ``until`` is done."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_BOUND_SECONDS)
        connector = aiohttp.TCPConnector(limit=concurrency * 4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks = [asyncio.create_task(self._client_loop(session)) for _ in range(concurrency)]
            probe = asyncio.create_task(self.probe_readyz(session))
            await until
            self.stopping = True
            await asyncio.gather(*tasks, probe)
        return self.figures


def recovery_after(readyz: list[tuple[float, int]], up_at: float) -> tuple[float | None, int]:
    """Seconds from ``up_at`` to the first /readyz 200 after it, and how many 503s were seen in the 10 s before."""
    gap_503s = sum(1 for at, status in readyz if up_at - 10 <= at <= up_at and status == 503)
    for at, status in readyz:
        if at >= up_at and status == 200:
            return at - up_at, gap_503s
    return None, gap_503s


@dataclass
class FaultReport:
    """The figures of one run, and what broke."""

    figures: Figures
    worker_restart_seconds: list[float] = field(default_factory=list)
    recoveries: dict[str, float | None] = field(default_factory=dict)
    gap_503s: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The figures for a person."""
        restarts = ", ".join(f"{s:.2f} s" for s in self.worker_restart_seconds) or "none"
        recoveries = ", ".join(f"{name}: {'never' if s is None else f'{s:.2f} s'} ({self.gap_503s[name]} readyz 503s)"
                               for name, s in self.recoveries.items())
        return (f"{self.figures.summary()}\nworker replaced after kill -9 in: {restarts}\n"
                f"back after the database returned: {recoveries}\ninvariant problems: {len(self.problems)}")


async def _kill_a_worker(serve: Serve, report: FaultReport) -> None:
    before = serve.serving_pids()
    victim = before[-1]
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(serve.serving_pids()) <= len(before):
        assert time.monotonic() < deadline, "the killed worker was not replaced within 30 s"
        await asyncio.sleep(0.05)
    replacement = serve.serving_pids()[len(before)]
    report.worker_restart_seconds.append(serve.serving_times()[replacement] - killed_at)


async def _restart_postgres(pg: OwnPostgres, mode: str) -> float:
    """Restart (fast) or crash and restart (immediate); when it accepts connections again."""
    await asyncio.to_thread(pg.restart, mode)
    return time.time()


async def run_faults(pg: OwnPostgres, base: Path, *, clients: int, concurrency: int, cashiers: int = 8,
                     yearly_capacity: int | None = None, rounds: int = 1, pause: float = 2.0) -> FaultReport:
    """Serve from ``pg`` with two workers, drive the load, and meanwhile kill a worker, restart and crash PostgreSQL
    (``rounds`` times each); then check every invariant. The caller owns ``pg`` (started) and stops it."""
    import asyncpg

    from perks.core.db import connect
    from tests.fault_invariants import broken_invariants
    from tests.support import Api

    admin = await asyncpg.connect(pg.admin_url)
    database = "perks_faults_" + secrets.token_hex(4)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    serve = Serve(pg.url(database), base)
    serve.start()
    try:
        await serve.wait_serving(2)
        db = await connect(pg.url(database))
        async with aiohttp.ClientSession(base_url=serve.url) as session:
            api = Api(session, db)  # type: ignore[arg-type]  # ClientSession answers .request like a TestClient
            program = await api.program(yearly_quota=3, yearly_capacity=yearly_capacity)
            tokens = [program["cashier"]]
            for _ in range(cashiers - 1):
                tokens.append((await api.merchant_user(program["merchant"], "cashier", program["store"]))[1])
            members: list[str] = []
            for start in range(0, clients, 25):
                batch = await asyncio.gather(*(api.member(program["tier"]) for _ in range(min(25, clients - start))))
                members += [token for _, token in batch]
        await db.close()

        report = FaultReport(Figures())
        load = Load(serve.url, program, tokens, members)
        report.figures = load.figures
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        running = asyncio.create_task(load.run(concurrency, ended))
        up_at: dict[str, float] = {}
        try:
            for number in range(rounds):
                await asyncio.sleep(pause)
                await _kill_a_worker(serve, report)
                await asyncio.sleep(pause)
                up_at[f"restart -m fast #{number + 1}"] = await _restart_postgres(pg, "fast")
                await asyncio.sleep(pause)
                up_at[f"crash -m immediate #{number + 1}"] = await _restart_postgres(pg, "immediate")
            await asyncio.sleep(pause + 5)
        finally:
            ended.set_result(None)
            await running
        for name, at in up_at.items():
            report.recoveries[name], report.gap_503s[name] = recovery_after(load.figures.readyz, at)
        db = await connect(pg.url(database))
        try:
            report.problems = await broken_invariants(db, load.figures)
        finally:
            await db.close()
        exit_code = serve.stop()
        if exit_code != 0:
            report.problems.append(f"perks serve exited {exit_code} on SIGTERM")
        return report
    finally:
        serve.kill()
