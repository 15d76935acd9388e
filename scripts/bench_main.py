"""``scripts/bench``: the product served on a fresh database, loaded by wrk, side by side with pgbench on the same
server; one table (figure, reference, ratio, goal, pass/fail) and a JSON file. Non-zero exit when a counter
invariant breaks after a load run (3) or a load run's requests fail (4); with --strict, 1 when a goal is missed."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_tools as tools  # noqa: E402
from perks.core.config import Config  # noqa: E402
from bench_tools import CALLBACK_METRIC, HELD_METRIC, LAG_METRIC, lag_buckets, lag_window  # noqa: E402
from bench_report import Report, Row  # noqa: E402
from bench_server import (  # noqa: E402
    API, HOT_PERK, Http, Program, Server, fresh_database, have, issue_vouchers, redeem_work, set_up_program,
    start_server, wait_ready, which_wrk_hint,
)

COUNTED_SINCE = """
SELECT json_build_object('n', count(*),
                         'span', COALESCE(extract(epoch FROM max(redeemed_at) - min(redeemed_at)), 0))
FROM redemptions WHERE redeemed_at >= $1
"""
PARTS = ("redeem", "hot", "latency", "loop", "qr", "terminal", "batch")
HTTP_PARTS = ("redeem", "hot", "latency", "loop", "terminal")
PROBE_ENVS = ("PERKS_LOOP_PROBE",)


class InvariantBroken(Exception):
    """A counter no longer equals its redemptions, or a limit was passed."""


class LoadFailed(Exception):
    """A load run's requests were answered with errors: its figures would mean nothing."""


class Bench:
    """One run: the server, the program, the references and the rows of the table."""

    def __init__(self, args: argparse.Namespace, db_url: str, http: Http, program: Program, workdir: Path,
                 server: Server) -> None:
        self.args, self.db_url, self.http, self.program, self.workdir = args, db_url, http, program, workdir
        self.server = server
        self.report = Report()
        self.references: dict[str, list[float]] = {}
        self.uniform_rate: float | None = None
        self.half_connections: int | None = None
        self.seed = 0

    async def restart(self, **extra_env: str) -> None:
        """Serve again on the same database and secret (every session stays valid), with ``extra_env`` added."""
        env = {k: v for k, v in self.server.env.items() if k not in PROBE_ENVS} | extra_env
        self.server.stop()
        self.server = start_server(self.db_url, self.args.workers, self.args.pool, env)
        self.http.base = self.server.base_url
        await wait_ready(self.http, self.server)

    # ---- references ---------------------------------------------------------------------------------------------

    def pgbench(self, kind: str) -> float:
        """Run the reference ``kind`` once more; its tps."""
        tps = tools.run_pgbench(self.db_url, kind, seconds=self.args.pgbench_duration,
                                clients=self.args.connections)
        self.references.setdefault(kind, []).append(tps)
        print(f"  pgbench {kind}: {tps:,.0f} tps", flush=True)
        return tps

    def reference(self, kind: str) -> float:
        """The mean tps of every run of reference ``kind`` so far (before and after the load)."""
        runs = self.references[kind]
        return sum(runs) / len(runs)

    async def floor(self) -> float:
        """The product's redemption function alone, driven by pgbench at the uniform cashiers: redemptions/s."""
        tz = Config.from_env(self.server.env).timezone
        wanted = int(self.reference("redeem") * 0.4 * self.args.pgbench_duration) + 100
        count = await tools.floor_setup(self.db_url, self.program.uniform_usernames, self.program.perks,
                                        self.program.clients, wanted, tz)
        tps, ran = await asyncio.to_thread(tools.run_pgbench_floor, self.db_url, count,
                                           clients=self.args.connections)
        redeemed = await tools.floor_teardown(self.db_url)
        await self.check_invariants()
        if redeemed != ran:
            raise LoadFailed(f"the floor redeemed {redeemed} of its {ran} vouchers")
        self.references.setdefault("floor", []).append(tps)
        print(f"  floor (perks_redeem by pgbench): {tps:,.0f} redemptions/s, {redeemed:,} redeemed; invariants hold",
              flush=True)
        return tps

    # ---- redemption load ----------------------------------------------------------------------------------------

    async def redeem(self, count: int, cashiers: list[str], perks: list[str], connections: int,
                     side: list[list[tuple[str | None, str, str, str]]] | None = None,
                     ) -> tuple[float, tools.WrkResult, list[tools.WrkResult]]:
        """``count`` redemptions by wrk (with one more wrk per list of ``side`` requests at the same time); the
        redemptions/s as the database counted them, wrk's results, and the invariants checked after."""
        self.seed += 1
        lines = await redeem_work(self.http, self.program, count, cashiers, perks, self.seed)
        work = tools.write_work(self.workdir / f"redeem{self.seed}.txt", lines)
        started = datetime.now(timezone.utc)
        jobs = [asyncio.to_thread(tools.run_wrk, self.http.base, work, seconds=self.args.duration,
                                  connections=connections, cycle=False)]
        for n, side_lines in enumerate(side or []):
            side_work = tools.write_work(self.workdir / f"side{self.seed}-{n}.txt", side_lines)
            jobs.append(asyncio.to_thread(tools.run_wrk, self.http.base, side_work, seconds=self.args.duration,
                                          connections=self.args.side_connections, cycle=True, timeout_s=30))
        main, *side_results = await asyncio.gather(*jobs)
        row = await self.counted_since(started)
        await self.check_invariants()
        if main.ran_out and row["span"] > 0:
            rate = row["n"] / row["span"]  # over the time the vouchers lasted
        else:
            rate = row["n"] / main.seconds
        if main.non2xx or main.socket_errors:
            raise LoadFailed(f"{main.non2xx} of {main.requests} redemptions answered non-2xx, "
                             f"{main.socket_errors} socket errors (see the server's log above)")
        print(f"  {row['n']:,} redeemed, {rate:,.0f}/s, p99 {main.p99_ms:.1f} ms"
              f"{' (vouchers ran out)' if main.ran_out else ''}; invariants hold", flush=True)
        return rate, main, side_results

    async def check_invariants(self) -> None:
        """Raise :class:`InvariantBroken` unless every counter equals its redemptions and no limit is passed."""
        broken = await tools.broken_invariants(self.db_url)
        self.report.load_runs += 1
        if broken:
            raise InvariantBroken(", ".join(f"{name}: {n}" for name, n in broken.items()))

    async def counted_since(self, started: datetime) -> dict[str, Any]:
        """Redemptions made since ``started``: how many, and the seconds from the first to the last."""
        found = await tools.fetch_value(self.db_url, COUNTED_SINCE, started)
        return json.loads(found) if isinstance(found, str) else found

    def voucher_budget(self, rate: float, factor: float = 1.3) -> int:
        """How many vouchers a redemption run of ``--duration`` at ``rate``/s needs (capped by the program)."""
        wanted = int(rate * self.args.duration * factor) + 100
        return min(wanted, len(self.program.sessions) * len(self.program.perks))

    async def part_redeem(self) -> None:
        print("== uniform redemption load", flush=True)
        self.pgbench("redeem")
        # The reference's speed bounds what HTTP can reach; vouchers that run out end the run early, not wrongly.
        count = self.voucher_budget(self.reference("redeem"), 0.8)
        rate, result, _ = await self.redeem(count, self.program.uniform_cashiers, self.program.perks,
                                            self.args.connections)
        self.uniform_rate = rate
        self.pgbench("redeem")
        await self.floor()
        ref, floor = self.reference("redeem"), self.reference("floor")
        self.report.add(Row("redeem", "uniform redemptions/s, 16 merchants", rate, "/s", ref, "pgbench tps",
                            rate / ref, "≥ 0.6×", rate / ref >= 0.6,
                            f"{self.args.connections} conn, {self.args.workers} workers; pgbench runs "
                            + ", ".join(f"{x:,.0f}" for x in self.references["redeem"])))
        self.report.add(Row("redeem", "perks_redeem alone by pgbench /s (floor)", floor, "/s", ref, "pgbench tps",
                            floor / ref, "", None, "every rule of a redemption, no HTTP: the database's own cost"))
        self.report.add(Row("redeem", "uniform redemptions/s, against the floor", rate, "/s", floor,
                            "perks_redeem /s", rate / floor, "", None, "what HTTP and Python add"))

    async def part_hot(self) -> None:
        print("== hot partner: every redemption on one merchant's capacity counter", flush=True)
        if self.uniform_rate is None:
            await self.part_redeem()
        self.pgbench("redeem_hot")
        count = self.voucher_budget(self.uniform_rate or 100)
        count = min(count, len(self.program.sessions))  # one perk: one live voucher per client
        rate, _, _ = await self.redeem(count, self.program.hot_cashiers, [HOT_PERK], self.args.connections)
        self.pgbench("redeem_hot")
        uniform = self.uniform_rate or 1
        self.report.add(Row("hot", "hot partner redemptions/s, 1 counter", rate, "/s", uniform, "uniform /s",
                            rate / uniform, "≥ 0.9×", rate / uniform >= 0.9, "16 stores of one merchant, one perk"))
        hot_ref, ref = self.reference("redeem_hot"), self.reference("redeem")
        self.report.add(Row("hot", "pgbench hot row tps (for comparison)", hot_ref, "tps", ref, "pgbench tps",
                            hot_ref / ref, "", None, "the database's own hot-row figure"))

    async def half_rate_connections(self) -> int:
        """How many wrk connections redeem at about half the peak rate (found once, then kept).

        wrk has no constant-rate mode: with few connections its closed loop runs below the peak. A short probe
        with one connection gives the unloaded latency, and rate ≈ connections / latency picks the count."""
        if self.half_connections is None:
            if self.uniform_rate is None:
                await self.part_redeem()
            peak = self.uniform_rate or 100
            saved = self.args.duration
            self.args.duration = min(saved, 3)
            _, probe, _ = await self.redeem(min(self.voucher_budget(peak, 0.3), 2000), self.program.uniform_cashiers,
                                            self.program.perks, 1)
            self.args.duration = saved
            unloaded = max(probe.p50_ms / 1000, 1e-4)
            self.half_connections = max(1, min(self.args.connections, round(peak / 2 * unloaded)))
        return self.half_connections

    async def part_latency(self) -> None:
        print("== latency at half the peak rate", flush=True)
        connections = await self.half_rate_connections()
        peak = self.uniform_rate or 100
        rate, result, _ = await self.redeem(self.voucher_budget(peak / 2), self.program.uniform_cashiers,
                                            self.program.perks, connections)
        self.report.add(Row("latency", "redemption p99 ms at ~half peak", result.p99_ms, "ms", None, "", None,
                            "≤ 20 ms", result.p99_ms <= 20,
                            f"wrk closed loop, {connections} conn: {rate:,.0f}/s = {rate / peak:.2f}× peak; "
                            f"p50 {result.p50_ms:.1f} ms"))

    async def part_loop(self) -> None:
        print("== event-loop blocking while QR images render and logins hash, under redemption load", flush=True)
        # Lateness alone mixes one piece of work holding the loop with many short ones queued in a busy turn: the
        # server is restarted with its loop's every callback timed (asyncio's loop, which allows it), and the
        # longest callback is the figure; lateness is reported beside it.
        await self.restart(PERKS_LOOP_PROBE="callbacks")
        try:
            await self.loop_runs()
        finally:
            await self.restart()

    async def loop_runs(self) -> None:
        if not lag_buckets(await self.http.metrics(), CALLBACK_METRIC):
            self.report.add(Row("loop", "longest event-loop callback ms", None, "ms", None, "", None, "≤ 5 ms", False,
                                f"the server has no {CALLBACK_METRIC} metric"))
            return
        connections = await self.half_rate_connections()
        peak = self.uniform_rate or 100
        # At half the peak rate the loop has time to spare; at the peak (reported too) it serves a queue.
        for label, conns, goal in (("half peak", connections, True), ("peak", self.args.connections, False)):
            text = await self.http.metrics()
            before = {m: lag_buckets(text, m) for m in (CALLBACK_METRIC, LAG_METRIC, HELD_METRIC)}
            rate, _, sides = await self.redeem(self.voucher_budget(peak if goal else peak * 1.3),
                                               self.program.uniform_cashiers, self.program.perks, conns,
                                               [self.qr_lines(), self.login_lines()])
            text = await self.http.metrics()
            longest, callbacks, over = lag_window(before[CALLBACK_METRIC], lag_buckets(text, CALLBACK_METRIC), 0.005)
            late, samples, late_over = lag_window(before[LAG_METRIC], lag_buckets(text, LAG_METRIC), 0.005)
            held, _, held_over = lag_window(before[HELD_METRIC], lag_buckets(text, HELD_METRIC), 0.005)
            qr_side, login_side = sides
            note = (f"{conns} conn redeeming {rate:,.0f}/s; beside it QR PNG+SVG {qr_side.rate:,.0f}/s and logins "
                    f"{login_side.rate - login_side.non2xx / login_side.seconds:,.1f}/s on "
                    f"{self.args.side_connections} conn each; {callbacks:,} callbacks timed, {over} above 5 ms")
            self.report.add(Row("loop", f"longest event-loop callback (CPU) ms, redeeming at {label}",
                                longest * 1000 if longest != math.inf else math.inf, "ms", None, "", None,
                                "≤ 5 ms" if goal else "", (over == 0) if goal else None, note))
            self.report.add(Row("loop", f"  timer lateness max ms, at {label}",
                                late * 1000 if late != math.inf else math.inf, "ms", None, "", None, "", None,
                                f"{samples:,} 10 ms timer samples, {late_over} late by over 5 ms: queued turns of a "
                                f"busy loop, and the thread waiting for a core that wrk, PostgreSQL or the image "
                                f"and hash workers hold"))
            self.report.add(Row("loop", f"  of it on a core, at {label}",
                                held * 1000 if held != math.inf else math.inf, "ms", None, "", None, "", None,
                                f"{held_over} samples above 5 ms; the loop's own work during the late turn, many "
                                f"callbacks together (no one callback above the figure above)"))

    def qr_lines(self) -> list[tuple[str | None, str, str, str]]:
        """QR images (PNG, SVG) of issued vouchers, in turn."""
        lines: list[tuple[str | None, str, str, str]] = []
        for session, voucher_id in self.program.qr_vouchers:
            lines.append((session, "GET", f"{API}/me/vouchers/{voucher_id}/qr.png", ""))
            lines.append((session, "GET", f"{API}/me/vouchers/{voucher_id}/qr.svg", ""))
        return lines

    def login_lines(self) -> list[tuple[str | None, str, str, str]]:
        """Every cashier's login."""
        return [(None, "POST", f"{API}/auth/token", json.dumps({"username": user, "password": "bench password 1"}))
                for user in self.program.cashier_usernames]

    async def part_terminal(self) -> None:
        print("== the other terminal calls, each against a one-statement pgbench equivalent", flush=True)
        self.pgbench("read")
        self.pgbench("write")
        program = self.program
        vouchers = await issue_vouchers(self.http, [(s, program.perks[-1]) for s in program.sessions[:4000]])
        cashiers = program.uniform_cashiers
        calls = {
            "scan": ("read", [(cashiers[n % len(cashiers)], "POST", f"{API}/merchant/scan",
                               json.dumps({"token": v["token"]})) for n, v in enumerate(vouchers)]),
            "/me/entitlements": ("read", [(s, "GET", f"{API}/me/entitlements", "") for s in program.sessions]),
            "POST /me/vouchers": ("write", [(s, "POST", f"{API}/me/vouchers",
                                             json.dumps({"perk": program.perks[-2]})) for s in program.sessions]),
            "login": ("read", self.login_lines()),
            "GET /healthz (no database)": ("read", [(None, "GET", "/healthz", "")]),
        }
        measured = {}
        for name, (kind, lines) in calls.items():
            self.seed += 1
            work = tools.write_work(self.workdir / f"terminal{self.seed}.txt", lines)
            result = await asyncio.to_thread(tools.run_wrk, self.http.base, work, seconds=self.args.duration,
                                             connections=self.args.connections)
            good = result.requests - result.non2xx
            measured[name] = (kind, good / result.seconds, result)
            print(f"  {name}: {good / result.seconds:,.0f}/s, p99 {result.p99_ms:.1f} ms"
                  f"{f', {result.non2xx} non-2xx' if result.non2xx else ''}", flush=True)
        self.pgbench("read")
        self.pgbench("write")
        await self.check_invariants()
        # The HTTP server's own ceiling in this run: /healthz touches no database at all.
        _, ceiling, _ = measured.pop("GET /healthz (no database)")
        self.report.add(Row("terminal", "GET /healthz /s (the HTTP ceiling)", ceiling, "/s", None, "", None, "",
                            None, "no database work: what the HTTP server alone answers on this machine"))
        for name, (kind, rate, result) in measured.items():
            ref = self.reference(kind)
            ratio = rate / ref
            note = f"p99 {result.p99_ms:.1f} ms" + (f"; {result.non2xx} non-2xx" if result.non2xx else "")
            passed: bool | None = ratio >= 0.3
            if name == "login" and not passed:
                passed, note = None, f"{note}; argon2id is slow on purpose (tens of ms of CPU a login)"
            elif not passed and 0.3 * ref > ceiling:
                passed, note = None, (f"{note}; 0.3× would be {0.3 * ref:,.0f}/s, above the {ceiling:,.0f}/s that "
                                      f"the server answers with no database work at all")
            self.report.add(Row("terminal", f"{name} /s", rate, "/s", ref, f"pgbench {kind} tps", ratio,
                                "≥ 0.3×", passed, note))


async def run_http_parts(args: argparse.Namespace, admin_url: str, parts: list[str], report_to: Report,
                         workdir: Path) -> None:
    """Serve on a fresh database, set the program up, run the HTTP parts."""
    async with fresh_database(admin_url, args.keep) as db_url:
        await tools.reference_setup(db_url)
        server = start_server(db_url, args.workers, args.pool)
        bench: Bench | None = None
        try:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as session:
                http = Http(session, server.base_url)
                await wait_ready(http, server)
                started = time.monotonic()
                program = await set_up_program(http, server.env, args.clients)
                issued = await http_issue_qr(http, program)
                program.qr_vouchers = issued
                print(f"set up {len(program.clients):,} clients, 17 merchants through the API in "
                      f"{time.monotonic() - started:.1f} s", flush=True)
                bench = Bench(args, db_url, http, program, workdir, server)
                bench.report = report_to
                for part in parts:
                    try:
                        await getattr(bench, f"part_{part}")()
                    except LoadFailed as exc:
                        print(f"  FAILED: {exc}", flush=True)
                        report_to.load_failures += 1
                        report_to.add(Row(part, f"{part}: load run failed", None, "", None, "", None, "", False,
                                          str(exc)))
                report_to.references = bench.references
        finally:
            (bench.server if bench else server).stop()
            await tools.reference_teardown(db_url)


async def http_issue_qr(http: Http, program: Program) -> list[tuple[str, str]]:
    """Vouchers whose QR images the side load fetches (the first perk, the first 200 clients)."""
    sessions = program.sessions[:200]
    issued = await issue_vouchers(http, [(s, program.perks[0]) for s in sessions])
    return [(s, v["id"]) for s, v in zip(sessions, issued)]


async def main(args: argparse.Namespace) -> int:
    """Run the parts asked for; print the table; write the JSON; the exit status."""
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"bench: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    http_parts = [p for p in HTTP_PARTS if p in parts]
    if http_parts and not tools.wrk_available():
        print(f"bench: {which_wrk_hint()}", file=sys.stderr)
        return 2
    if not have(tools.PGBENCH):
        print(f"bench: pgbench not found at {tools.PGBENCH}: apt-get install -y postgresql-client-15", file=sys.stderr)
        return 2
    report = Report()
    admin_url = await admin_database_url(args)
    status = 0
    with tempfile.TemporaryDirectory(prefix="perks-bench-") as tmp:
        try:
            if http_parts:
                await run_http_parts(args, admin_url, http_parts, report, Path(tmp))
            if "qr" in parts:
                from bench_qr import qr_rows

                print("== QR images, ours and zxing-cpp's C++ encoder", flush=True)
                for row in await asyncio.to_thread(qr_rows, args.qr_count):
                    report.add(row)
            if "batch" in parts:
                from bench_batch import batch_rows

                print(f"== batch work on a program of {args.scale:,} clients", flush=True)
                for row in await batch_rows(admin_url, args.scale, args.keep, Path(tmp)):
                    report.add(row)
        except InvariantBroken as exc:
            print(f"\nbench: A COUNTER INVARIANT BROKE: {exc}", file=sys.stderr)
            report.invariants_broken = str(exc)
            status = 3
    print()
    print(report.table())
    meta = {"command": " ".join(["scripts/bench", *sys.argv[1:]]), "at": datetime.now(timezone.utc).isoformat(),
            "duration": args.duration, "connections": args.connections, "workers": args.workers,
            "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded", "cpus": os.cpu_count()}
    Path(args.json).write_text(json.dumps(report.as_json(meta), indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten {args.json}")
    if status == 0 and report.load_failures:
        print("bench: a load run's requests failed (see above)", file=sys.stderr)
        status = 4
    if status == 0 and args.strict and report.failed():
        status = 1
    return status


async def admin_database_url(args: argparse.Namespace) -> str:
    """DATABASE_URL, else the embedded server (under --data-dir or a temporary directory)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from perks.core.db import embedded_admin_url

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="perks-bench-pg-"))
    return await asyncio.to_thread(embedded_admin_url, data_dir)


def parser() -> argparse.ArgumentParser:
    """The options of ``scripts/bench``."""
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help=f"comma-separated parts: {','.join(PARTS)} (default: all)")
    p.add_argument("--duration", type=float, default=10, help="seconds of each HTTP load run (default 10)")
    p.add_argument("--pgbench-duration", type=float, default=None, help="seconds of each pgbench run (default: --duration)")
    p.add_argument("--connections", type=int, default=16, help="HTTP connections and pgbench clients (default 16)")
    p.add_argument("--side-connections", type=int, default=1, help="connections of each side load, QR and logins (default 1)")
    p.add_argument("--workers", type=int, default=2, help="perks serve --workers (default 2)")
    p.add_argument("--pool", type=int, default=None, help="database connections per worker (default: the product's)")
    p.add_argument("--clients", type=int, default=None, help="clients set up through the API (default: by duration)")
    p.add_argument("--qr-count", type=int, default=300, help="QR images per measurement (default 300)")
    p.add_argument("--scale", type=int, default=1_000_000, help="clients (and redemptions) of the batch part")
    p.add_argument("--smoke", action="store_true", help="seconds-long run of every part at tiny sizes (for CI)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    p.add_argument("--json", default="bench-results.json", help="where to write the JSON (default bench-results.json)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark's databases")
    p.add_argument("--data-dir", help="the embedded PostgreSQL's directory, without DATABASE_URL (default: temporary)")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on other options."""
    if args.smoke:
        args.duration = min(args.duration, 1)
        args.qr_count = min(args.qr_count, 20)
        args.scale = min(args.scale, 2000)
        args.clients = args.clients or 300
    args.pgbench_duration = args.pgbench_duration or args.duration
    # Enough clients that one hot perk (one live voucher per client) lasts a run at about 1,500/s.
    args.clients = args.clients or int(max(1000, 1500 * args.duration))
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(resolve(parser().parse_args()))))
