"""The command line of points and tiers: ``perks points import FILE``, ``perks tiers evaluate``,
``perks clients import FILE``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TextIO

import asyncpg
from tqdm import tqdm

from perks.clients import imports
from perks.core.auth import SYSTEM
from perks.core.batches import BatchRejected, Problems
from perks.core.clock import Clock
from perks.core.config import Config
from perks.core.db import with_connection
from perks.core.errors import ApiError
from perks.points import evaluation, events


def register(subparsers: Any) -> None:
    """Add the ``points``, ``tiers`` and ``clients`` commands to the ``perks`` command's subparsers."""
    points = subparsers.add_parser("points", help="loyalty points")
    points_commands = points.add_subparsers(dest="points_command", required=True)
    ingest = points_commands.add_parser(
        "import", help="ingest contribution events from a CSV file (all or nothing, idempotent on event_ref)"
    )
    ingest.add_argument("file", type=Path, help="CSV: event_ref,client_external_ref,source,amount_fen,occurred_at")
    _progress_option(ingest)
    ingest.set_defaults(func=cmd_points_import)

    tiers = subparsers.add_parser("tiers", help="client tiers")
    tier_commands = tiers.add_subparsers(dest="tiers_command", required=True)
    evaluate = tier_commands.add_parser("evaluate", help="give every client the tier its points reach")
    evaluate.set_defaults(func=cmd_tiers_evaluate)

    clients = subparsers.add_parser("clients", help="the bank's clients")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    load = client_commands.add_parser("import", help="create or update clients from a CSV file (all or nothing)")
    load.add_argument("file", type=Path, help="CSV: external_ref,name,phone,birthday,tier")
    _progress_option(load)
    load.set_defaults(func=cmd_clients_import)


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar (default: when the error stream is a terminal)",
    )


def _run(config: Config, work: Callable[[asyncpg.Connection], Any]) -> Any:
    return asyncio.run(with_connection(config, work))


def _report_rejection(exc: BatchRejected, path: Path, out: TextIO) -> None:
    print(f"perks: {path}: {exc.message}", file=out)
    for problem in exc.problems:
        print(f"  line {problem.position}: {problem.field}: {problem.reason}", file=out)
    hidden = exc.details["error_count"] - len(exc.problems)
    if hidden > 0:
        print(f"  ... and {hidden} more problems", file=out)


def _run_import(
    config: Config, path: Path, work: Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]]
) -> dict[str, Any] | None:
    """Run an all-or-nothing import; on refusal, say why on stderr (every bad line) and return None."""
    try:
        return _run(config, work)
    except BatchRejected as exc:
        _report_rejection(exc, path, sys.stderr)
    except ApiError as exc:
        print(f"perks: {path}: {exc.message} {exc.details or ''}".rstrip(), file=sys.stderr)
    return None


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; if not, say so on stderr."""
    if path.is_file():
        return True
    print(f"perks: {path}: no such file", file=sys.stderr)
    return False


def _read_bar(path: Path, args: argparse.Namespace, what: str) -> tqdm:
    return tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"reading {what}",
        disable=None if args.progress is None else not args.progress, file=sys.stderr,
    )


def _phase(bar: tqdm, what: str) -> Callable[[str], None]:
    """Say on the bar what happens once the file is read: checking, then applying, can take a while."""

    def show(name: str) -> None:
        bar.set_description_str(f"{name} {what}")

    return show


def cmd_points_import(config: Config, args: argparse.Namespace) -> int:
    """``perks points import FILE``."""
    path: Path = args.file
    if not _is_file(path):
        return 2
    started = time.monotonic()
    now = Clock().now()

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        problems = Problems("line")
        with path.open("rb") as binary, _read_bar(path, args, "events") as bar:
            records = events.read_csv_file(binary, now, problems, bar.update)
            return await events.ingest_events(
                conn, SYSTEM, records, problems, now=now, origin=f"file:{path.name}", on_phase=_phase(bar, "events")
            )

    result = _run_import(config, path, work)
    if result is None:
        return 1
    print(
        f"{path}: {result['received']:,} events read, {result['new']:,} new, {result['known']:,} already known "
        f"(batch {result['batch_id']}) in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_tiers_evaluate(config: Config, args: argparse.Namespace) -> int:
    """``perks tiers evaluate``."""
    started = time.monotonic()
    now = Clock().now()
    result = _run(config, lambda conn: evaluation.evaluate_tiers(conn, SYSTEM, now, config.timezone))
    print(
        f"tiers evaluated: {result['evaluated']:,} clients, {result['changed']:,} changed, {result['held']:,} held "
        f"by an override (points from {result['window_from']:%Y-%m-%d %H:%M:%S} UTC) in "
        f"{time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_clients_import(config: Config, args: argparse.Namespace) -> int:
    """``perks clients import FILE``."""
    path: Path = args.file
    if not _is_file(path):
        return 2
    started = time.monotonic()
    now = Clock().now()
    today = now.astimezone(config.timezone).date()

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        problems = Problems("line")
        with path.open("rb") as binary, _read_bar(path, args, "clients") as bar:
            records = imports.read_csv_file(binary, today, problems, bar.update)
            return await imports.import_clients(
                conn, SYSTEM, records, problems, now=now, on_phase=_phase(bar, "clients")
            )

    result = _run_import(config, path, work)
    if result is None:
        return 1
    print(
        f"{path}: {result['received']:,} clients read, {result['created']:,} created, {result['updated']:,} updated, "
        f"{result['unchanged']:,} unchanged in {time.monotonic() - started:.1f} s"
    )
    return 0
