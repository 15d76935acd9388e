"""The ``perks`` command: serve, migrate, staff, keys, demo, points, tiers, clients."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from typing import Any, Awaitable, Callable, Sequence

import asyncpg

from perks.core.config import Config, ConfigError
from perks.core.db import connect, resolve_database_url
from perks.core.logs import setup_logging
from perks.core.metrics import MULTIPROC_ENV
from perks.core.migrate import migrate_url
from perks.points.cli import register as register_points_commands

log = logging.getLogger("perks")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``perks`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        parser.exit(2, f"perks: {exc}\n")
    setup_logging(config.log_level)
    sys.exit(args.func(config, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perks", description="Perks for a bank's most valuable clients.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, then serve HTTP")
    _serve_options(serve)
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(func=cmd_migrate)

    staff = commands.add_parser("staff", help="bank staff accounts")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    create = staff_commands.add_parser("create", help="create a staff account")
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--role", required=True, choices=["admin", "operator", "auditor"])
    create.set_defaults(func=cmd_staff_create)

    keys = commands.add_parser("keys", help="voucher signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser("rotate", help="make a new active signing key")
    rotate.set_defaults(func=cmd_keys_rotate)

    demo = commands.add_parser("demo", help="seed a demo program, print its logins and URLs, and serve")
    _serve_options(demo)
    demo.add_argument("--clients", type=int, default=300, help="how many demo clients (default 300)")
    demo.add_argument("--no-serve", action="store_true", help="seed only, do not serve")
    demo.add_argument(
        "--webhook-receiver", type=int, nargs="?", const=8099, default=None, metavar="PORT",
        help="also start a small local webhook receiver (default port 8099) subscribed to every event",
    )
    demo.set_defaults(func=cmd_demo)

    register_points_commands(commands)  # points import, tiers evaluate, clients import
    return parser


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (default PERKS_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default PERKS_PORT or 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")


async def _with_connection(config: Config, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    url = await resolve_database_url(config)
    await migrate_url(url)
    conn = await connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    """``perks migrate``."""

    async def run() -> None:
        url = await resolve_database_url(config)
        done = await migrate_url(url)
        print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in done))

    asyncio.run(run())
    return 0


def cmd_staff_create(config: Config, args: argparse.Namespace) -> int:
    """``perks staff create``."""
    from perks.accounts.service import create_user
    from perks.core.auth import SYSTEM
    from perks.core.errors import ApiError

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        return await create_user(conn, SYSTEM, username=args.username, password=args.password, role=args.role)

    try:
        user = asyncio.run(_with_connection(config, work))
    except ApiError as exc:
        print(f"perks: cannot create {args.username!r}: {exc.message} {exc.details or ''}".rstrip(), file=sys.stderr)
        return 1
    print(f"created {user['role']} {user['username']} ({user['id']})")
    return 0


def cmd_keys_rotate(config: Config, args: argparse.Namespace) -> int:
    """``perks keys rotate``."""
    from perks.vouchers.keys import rotate_keys

    kid = asyncio.run(_with_connection(config, lambda conn: rotate_keys(conn, config)))
    print(f"new active signing key {kid}")
    return 0


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    """``perks serve``: migrate, then serve with one or more worker processes."""
    host = args.host or config.host
    port = args.port or config.port

    async def prepare() -> None:
        await migrate_url(await resolve_database_url(config))

    asyncio.run(prepare())
    if args.workers <= 1:
        _run_worker(host, port, args.certfile, args.keyfile, reuse_port=False)
        return 0
    return _run_workers(args.workers, host, port, args.certfile, args.keyfile)


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    """``perks demo``: seed a believable program, print how to try it, then serve."""
    from perks.demo import print_welcome, seed_demo

    host = args.host or config.host
    port = args.port or config.port
    summary = asyncio.run(_with_connection(config, lambda conn: seed_demo(conn, config, clients=args.clients)))
    print_welcome(summary, host, port)
    if args.webhook_receiver and not args.no_serve:
        from perks.demo_receiver import receiver_url, start_receiver, subscribe_receiver

        secret = asyncio.run(_with_connection(config, lambda conn: subscribe_receiver(conn, config, args.webhook_receiver)))
        start_receiver(args.webhook_receiver, secret)
        print(f"  webhook receiver   {receiver_url(args.webhook_receiver)} prints every event it verifies")
    if args.no_serve:
        return 0
    if args.workers <= 1:
        _run_worker(host, port, args.certfile, args.keyfile, reuse_port=False)
        return 0
    return _run_workers(args.workers, host, port, args.certfile, args.keyfile)


def _run_worker(host: str, port: int, certfile: str | None, keyfile: str | None, reuse_port: bool) -> None:
    from aiohttp import web

    from perks.app import create_app

    config = Config.from_env()
    setup_logging(config.log_level)
    ssl_context = None
    if certfile:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(certfile, keyfile)
    web.run_app(
        create_app(config),
        host=host,
        port=port,
        ssl_context=ssl_context,
        reuse_port=reuse_port or None,
        shutdown_timeout=20,
        access_log_format='%a "%r" %s %b %Tfs rid=%{X-Request-ID}o',
        print=lambda text: log.info("%s", text.strip()),
    )


def _run_workers(workers: int, host: str, port: int, certfile: str | None, keyfile: str | None) -> int:
    """N processes listening on one port (SO_REUSEPORT); SIGTERM or Ctrl-C stops them gracefully."""
    os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="perks-metrics-"))
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_run_worker, args=(host, port, certfile, keyfile, True), name=f"perks-worker-{n}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    log.info("serving on %s:%s with %d workers", host, port, workers)

    def stop(signum: int, frame: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()
    return max((process.exitcode or 0) for process in processes)
