"""The benchmark's load generators: wrk (with Lua scripts that hand each request its own voucher or session) for
HTTP, pgbench for the database's own reference transactions, and the counter invariants checked after each run."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import asyncpg

from perks.quotas import invariants as quota_invariants
from perks.quotas import period

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
PSQL = "/usr/lib/postgresql/15/bin/psql"
WRK_THREADS = 2

# Each wrk thread reads the lines of the work file whose number modulo the thread count is its own, so that no
# two requests of a run carry the same voucher or session. A line is "<bearer or ->\t<method>\t<path>\t<body>".
# With "once", a thread that has used every line stops and says so (the figures then come from the database).
WRK_LUA = r"""
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests, i, once = {}, 0, false

function init(args)
  local file, count = args[1], tonumber(args[2])
  once = args[3] == "once"
  local k = 0
  for line in io.lines(file) do
    if k % count == id then
      local auth, method, path, body = string.match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {["Content-Type"] = "application/json"}
      if auth ~= "-" then headers["Authorization"] = "Bearer " .. auth end
      if body == "" then body = nil end
      requests[#requests + 1] = wrk.format(method, path, headers, body)
    end
    k = k + 1
  end
  ran_out = 0
end

function request()
  i = i + 1
  if i > #requests then
    ran_out = 1
    if once then
      -- Every voucher of this thread is spent: stop, and let the request on the way be a harmless one.
      wrk.thread:stop()
      return wrk.format("GET", "/healthz")
    end
    i = 1
  end
  return requests[i]
end

function done(summary, latency, requests)
  local out = 0
  for _, thread in ipairs(threads) do
    if thread:get("ran_out") == 1 then out = out + 1 end
  end
  local s = summary.errors
  io.write(string.format(
    '\nBENCH-JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"threads_ran_out":%d}\n',
    summary.requests, summary.duration, s.status, s.connect, s.read, s.write, s.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, out))
end
"""


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ran_out: bool
    connections: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    """Whether the wrk command is installed."""
    return shutil.which("wrk") is not None


def write_work(path: Path, lines: Sequence[tuple[str | None, str, str, str]]) -> Path:
    """The file that the Lua script reads: one ``(bearer or None, method, path, JSON body or "")`` per line."""
    path.write_text("".join(f"{auth or '-'}\t{method}\t{target}\t{body}\n" for auth, method, target, body in lines))
    return path


def run_wrk(base_url: str, work_file: Path, *, seconds: float, connections: int, cycle: bool = True,
            timeout_s: int = 10) -> WrkResult:
    """Drive the requests of ``work_file`` for ``seconds`` with ``connections`` keep-alive connections, each request
    the next line. ``cycle=False``: lines are used once (vouchers), and a thread that runs out stops."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_LUA)
    threads = max(1, min(WRK_THREADS, connections))
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, math.ceil(seconds))}s",
               "--timeout", f"{timeout_s}s", "-s", handle.name, base_url, "--",
               str(work_file), str(threads), "cycle" if cycle else "once"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    Path(handle.name).unlink(missing_ok=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    data = json.loads(line.removeprefix("BENCH-JSON "))
    return WrkResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6, non2xx=data["non2xx"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000, ran_out=data["threads_ran_out"] > 0, connections=connections,
    )


# ---- pgbench: the database's own speed at the same work ------------------------------------------------------

# Scratch tables of the reference, beside the product's (prefixed, dropped at the end). 100,000 client counters
# and 16 merchant counters, limits far away so that the conditional updates always succeed, as in the product.
REFERENCE_SETUP = """
DROP TABLE IF EXISTS bench_ref_redemptions, bench_ref_client_usage, bench_ref_merchant_usage, bench_ref_vouchers;
CREATE TABLE bench_ref_client_usage (id integer PRIMARY KEY, used integer NOT NULL DEFAULT 0,
                                     quota integer NOT NULL DEFAULT 1000000000);
CREATE TABLE bench_ref_merchant_usage (id integer PRIMARY KEY, used integer NOT NULL DEFAULT 0,
                                       capacity integer NOT NULL DEFAULT 1000000000);
CREATE TABLE bench_ref_redemptions (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, voucher_id text NOT NULL UNIQUE,
                                    client_id integer NOT NULL, merchant_id integer NOT NULL,
                                    redeemed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench_ref_vouchers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, client_id integer NOT NULL,
                                 token text NOT NULL, issued_at timestamptz NOT NULL DEFAULT now());
INSERT INTO bench_ref_client_usage (id) SELECT generate_series(1, 100000);
INSERT INTO bench_ref_merchant_usage (id) SELECT generate_series(1, 16);
"""
REFERENCE_TEARDOWN = """
DROP TABLE IF EXISTS bench_ref_redemptions, bench_ref_client_usage, bench_ref_merchant_usage, bench_ref_vouchers
"""

# The redemption-like transaction: one row inserted, two conditional counter updates, a durable commit.
REDEEM_SCRIPT = """\\set c random(1, 100000)
\\set m random(1, {merchants})
BEGIN;
INSERT INTO bench_ref_redemptions (voucher_id, client_id, merchant_id) VALUES (md5(random()::text || :client_id || :c), :c, :m);
UPDATE bench_ref_client_usage SET used = used + 1 WHERE id = :c AND used < quota;
UPDATE bench_ref_merchant_usage SET used = used + 1 WHERE id = :m AND used < capacity;
END;
"""
# One-statement equivalents of the other terminal calls: a keyed read, and a one-row insert (durable commit).
READ_SCRIPT = """\\set c random(1, 100000)
SELECT used, quota FROM bench_ref_client_usage WHERE id = :c;
"""
WRITE_SCRIPT = """\\set c random(1, 100000)
INSERT INTO bench_ref_vouchers (client_id, token) VALUES (:c, md5(random()::text));
"""
SCRIPTS = {
    "redeem": REDEEM_SCRIPT.format(merchants=16),
    "redeem_hot": REDEEM_SCRIPT.format(merchants=1),
    "read": READ_SCRIPT,
    "write": WRITE_SCRIPT,
}


async def reference_setup(db_url: str) -> None:
    """Create (again) the reference's scratch tables."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(REFERENCE_SETUP)
        await conn.execute("VACUUM ANALYZE bench_ref_client_usage, bench_ref_merchant_usage")
    finally:
        await conn.close()


async def reference_teardown(db_url: str) -> None:
    """Drop the reference's scratch tables."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(REFERENCE_TEARDOWN)
    finally:
        await conn.close()


def run_pgbench(db_url: str, kind: str, *, seconds: float, clients: int = 16) -> float:
    """Transactions per second of the reference script ``kind`` (prepared statements, ``clients`` clients)."""
    return _pgbench_tps(db_url, SCRIPTS[kind], clients, ["-T", str(max(1, math.ceil(seconds)))], seconds + 60)


def _pgbench_tps(db_url: str, script: str, clients: int, length: list[str], timeout: float) -> float:
    """Transactions per second of ``script`` run by ``clients`` pgbench clients (prepared statements) for
    ``length`` (``-T seconds`` or ``-t transactions``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    command = [PGBENCH, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, WRK_THREADS)),
               *length, "-f", handle.name, db_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    Path(handle.name).unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stdout[-600:]} {done.stderr[-600:]}")


# ---- the floor: the product's own redemption function, driven by pgbench ------------------------------------
# What the database alone does with every rule of a redemption (session, rate, store, refusal table, counters,
# audit entry, event), so that the HTTP figure can be read against the database's cost of the same work as well as
# against the reference's plain transaction. Fresh vouchers are written straight into the table, one per client and
# perk (each the newest of its pair), dealt round the given cashiers; each pgbench transaction redeems the next one
# in one call, as the service does. Only the scratch table, sequence and function go afterwards: the redemptions
# are real, and the invariants are checked over them like any load run's.
FLOOR_TEARDOWN = """
DROP FUNCTION IF EXISTS bench_floor_redeem();
DROP TABLE IF EXISTS bench_floor;
DROP SEQUENCE IF EXISTS bench_floor_next;
"""
FLOOR_SETUP = FLOOR_TEARDOWN + "CREATE SEQUENCE bench_floor_next;\n"
FLOOR_VOUCHERS = """
CREATE TABLE bench_floor AS
WITH cashiers AS (
    SELECT row_number() OVER (ORDER BY u.username) - 1 AS n, u.id AS user_id, u.username, u.session_generation,
           u.merchant_id, u.store_id
    FROM users u WHERE u.username = ANY($1::text[])
),
pairs AS (
    SELECT row_number() OVER (ORDER BY random()) AS k, c.id AS client_id, p.perk
    FROM clients c CROSS JOIN unnest($2::text[]) AS p(perk)
    WHERE c.id = ANY($3::uuid[])
    LIMIT $4
)
SELECT p.k, 'F' || substr(md5(random()::text || p.k), 1, 15) AS voucher_id, p.client_id, p.perk, c.*
FROM pairs p JOIN cashiers c ON c.n = p.k % (SELECT count(*) FROM cashiers)
"""
FLOOR_INSERT = """
INSERT INTO vouchers (id, client_id, perk_code, kid, token, issued_at, expires_at)
SELECT f.voucher_id, f.client_id, f.perk, k.kid, 'bench-floor', now(), now() + interval '2 hours'
FROM bench_floor f, (SELECT kid FROM signing_keys WHERE retired_at IS NULL) k
ORDER BY f.k
"""
FLOOR_FUNCTION = """
CREATE FUNCTION bench_floor_redeem() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r bench_floor;
    next_k bigint := nextval('bench_floor_next');
    at timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO r FROM bench_floor WHERE k = next_k;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    RETURN (SELECT d.status FROM perks_redeem(
        r.user_id, r.username, 'cashier', r.session_generation, r.merchant_id, r.store_id, NULL, r.voucher_id,
        at + interval '5 minutes', interval '30 seconds', at, {year}, {month}, DATE '{today}', 1000000000, NULL, NULL,
        interval '24 hours', false) d);
END
$$
"""
FLOOR_SCRIPT = "SELECT bench_floor_redeem();\n"
FLOOR_REDEEMED = "SELECT count(*) FROM redemptions r JOIN bench_floor f ON f.voucher_id = r.voucher_id"


async def floor_setup(db_url: str, cashiers: Sequence[str], perks: Sequence[str], clients: Sequence[str],
                      count: int, tz: ZoneInfo) -> int:
    """Write up to ``count`` fresh vouchers for the floor's run; how many there are. Its redemptions count in the
    quota period of this instant in ``tz`` (the run lasts seconds)."""
    at = period(datetime.now(timezone.utc), tz)
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(FLOOR_SETUP)
        await conn.execute(FLOOR_VOUCHERS, list(cashiers), list(perks), list(clients), count)
        await conn.execute("ALTER TABLE bench_floor ADD PRIMARY KEY (k)")
        await conn.execute(FLOOR_INSERT)
        await conn.execute(FLOOR_FUNCTION.format(year=at.year, month=at.month, today=at.today.isoformat()))
        await conn.execute("VACUUM ANALYZE bench_floor")
        return await conn.fetchval("SELECT count(*) FROM bench_floor")
    finally:
        await conn.close()


async def floor_teardown(db_url: str) -> int:
    """How many of the floor's vouchers were redeemed; then its scratch objects go."""
    conn = await asyncpg.connect(db_url)
    try:
        redeemed = await conn.fetchval(FLOOR_REDEEMED)
        await conn.execute(FLOOR_TEARDOWN)
        # Its burst of rows, without the statistics an autovacuum would gather, could turn a later part's plans
        # into scans on a server whose autovacuum is off (docs/operations.md): the parts after it start alike.
        await conn.execute("ANALYZE")
        return redeemed
    finally:
        await conn.close()


def run_pgbench_floor(db_url: str, vouchers: int, *, clients: int = 16) -> tuple[float, int]:
    """Floor redemptions shared by ``clients`` pgbench clients, as many of the ``vouchers`` as divide evenly: the
    transactions per second, and how many vouchers that spent."""
    clients = max(1, min(clients, vouchers))
    per_client = max(1, vouchers // clients)
    return _pgbench_tps(db_url, FLOOR_SCRIPT, clients, ["-t", str(per_client)], 600), per_client * clients


# ---- the counter invariants -------------------------------------------------------------------------------------

async def broken_invariants(db_url: str) -> dict[str, int]:
    """Each invariant that does not hold, with how many rows break it (empty: all hold): the service's own check."""
    conn = await asyncpg.connect(db_url)
    try:
        return await quota_invariants.broken_invariants(conn)
    finally:
        await conn.close()


async def fetch_value(db_url: str, query: str, *args: Any) -> Any:
    """One value from the benchmark's database."""
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# ---- the event loop's lateness, read from /metrics -------------------------------------------------------------

LAG_METRIC = "perks_event_loop_lag_seconds"
HELD_METRIC = "perks_event_loop_held_seconds"
CALLBACK_METRIC = "perks_event_loop_callback_cpu_seconds"


def lag_buckets(metrics_text: str, metric: str = LAG_METRIC) -> dict[float, float]:
    """The cumulative counts of an event-loop histogram, by upper bound (all workers summed)."""
    buckets: dict[float, float] = {}
    pattern = re.compile(r'^' + metric + r'_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
    for bound, count in pattern.findall(metrics_text):
        key = math.inf if bound == "+Inf" else float(bound)
        buckets[key] = buckets.get(key, 0.0) + float(count)
    return buckets


def lag_window(before: dict[float, float], after: dict[float, float], limit: float) -> tuple[float, int, int]:
    """Between two scrapes: the upper bound of the worst bucket reached, the samples, and those above ``limit``."""
    bounds = sorted(after)
    diffs = {b: after[b] - before.get(b, 0.0) for b in bounds}
    samples = int(diffs[math.inf])
    worst = 0.0
    previous = 0.0
    for bound in bounds:
        if diffs[bound] > previous:
            worst = bound
        previous = diffs[bound]
    over = samples - int(diffs.get(limit, 0.0))
    return worst, samples, over
