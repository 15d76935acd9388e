"""The ``perks`` command: serve, migrate, staff, keys, demo, points, tiers, clients."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
from typing import Any, Callable, Sequence

import asyncpg

from perks.core.config import Config, ConfigError
from perks.core.db import resolve_database_url, with_connection
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
    rotate = key_commands.add_parser(
        "rotate", help="make a new signing key: published at once, signing after a lead time (no voucher refused)")
    rotate.add_argument("--now", action="store_true",
                        help="sign with it at once (a leaked key: processes that have not reloaded refuse briefly)")
    rotate.set_defaults(func=cmd_keys_rotate)

    secret = commands.add_parser("secret", help="the service secret (PERKS_SECRET)")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True)
    secret_rotate = secret_commands.add_parser(
        "rotate", help="re-encrypt the signing keys under PERKS_NEW_SECRET (see docs/operations.md)")
    secret_rotate.set_defaults(func=cmd_secret_rotate)

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
        user = asyncio.run(with_connection(config, work))
    except ApiError as exc:
        print(f"perks: cannot create {args.username!r}: {exc.message} {exc.details or ''}".rstrip(), file=sys.stderr)
        return 1
    print(f"created {user['role']} {user['username']} ({user['id']})")
    return 0


def cmd_keys_rotate(config: Config, args: argparse.Namespace) -> int:
    """``perks keys rotate [--now]``."""
    from perks.vouchers.keys import ROTATION_LEAD_SECONDS, activation_of, rotate_keys

    async def work(conn: asyncpg.Connection) -> tuple[str, Any]:
        kid = await rotate_keys(conn, config, 0 if args.now else ROTATION_LEAD_SECONDS)
        return kid, await activation_of(conn, kid)

    kid, activates_at = asyncio.run(with_connection(config, work))
    print(f"new signing key {kid}: published now, signing from {activates_at.isoformat()}")
    return 0


def cmd_secret_rotate(config: Config, args: argparse.Namespace) -> int:
    """``perks secret rotate``: PERKS_SECRET is the current secret, PERKS_NEW_SECRET the next."""
    import dataclasses

    from perks.vouchers.keys import KeyDecryptionError, reencrypt_keys

    new_secret = os.environ.get("PERKS_NEW_SECRET", "")
    if len(new_secret) < 16 or new_secret == config.secret:
        print("perks: set PERKS_NEW_SECRET to the new secret (16 characters or more, not the current one)",
              file=sys.stderr)
        return 2
    new_config = dataclasses.replace(config, secret=new_secret)
    try:
        count = asyncio.run(with_connection(config, lambda conn: reencrypt_keys(conn, config, new_config)))
    except KeyDecryptionError as exc:
        print(f"perks: nothing changed: {exc}", file=sys.stderr)
        return 1
    if config.embedded and not os.environ.get("PERKS_SECRET"):
        _replace_embedded_secret(config, new_secret)
    print(f"re-encrypted {count} signing key(s); now restart every instance with the new PERKS_SECRET "
          "(sessions and wallet links made under the old one are refused from then on)")
    return 0


def _replace_embedded_secret(config: Config, new_secret: str) -> None:
    # The embedded mode keeps its secret in the data directory: swap the file whole.
    path = config.data_dir / "secret"
    tmp = path.with_name(f".secret.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_secret)
    os.replace(tmp, path)


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    """``perks serve``: migrate, then serve with one or more worker processes."""
    host = args.host or config.host
    port = args.port or config.port

    async def prepare() -> None:
        await migrate_url(await resolve_database_url(config))

    asyncio.run(prepare())
    if args.workers <= 1:
        _run_worker(args.certfile, args.keyfile, host=host, port=port)
        return 0
    return _run_workers(args.workers, host, port, args.certfile, args.keyfile)


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    """``perks demo``: seed a believable program, print how to try it, then serve."""
    from perks.demo import print_welcome, seed_demo

    host = args.host or config.host
    port = args.port or config.port
    summary = asyncio.run(with_connection(config, lambda conn: seed_demo(conn, config, clients=args.clients)))
    print_welcome(summary, host, port)
    if args.webhook_receiver and not args.no_serve:
        from perks.demo_receiver import receiver_url, start_receiver, subscribe_receiver

        secret = asyncio.run(with_connection(config, lambda conn: subscribe_receiver(conn, config, args.webhook_receiver)))
        start_receiver(args.webhook_receiver, secret)
        print(f"  webhook receiver   {receiver_url(args.webhook_receiver)} prints every event it verifies")
    if args.no_serve:
        return 0
    if args.workers <= 1:
        _run_worker(args.certfile, args.keyfile, host=host, port=port)
        return 0
    return _run_workers(args.workers, host, port, args.certfile, args.keyfile)


def _run_worker(certfile: str | None, keyfile: str | None, *, host: str | None = None, port: int | None = None,
                sock: socket.socket | None = None, on_ready: Callable[[], None] | None = None) -> None:
    """Serve the application in this process, on ``host``/``port`` or on a socket the supervisor opened."""
    from aiohttp import web

    from perks.app import create_app
    from perks.core.looplag import frozen_startup_heap, loop_lag_ctx

    config = Config.from_env()
    setup_logging(config.log_level)
    ssl_context = None
    if certfile:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(certfile, keyfile)
    app = create_app(config)
    # The event-loop lag metric, for served workers only.
    app.cleanup_ctx.append(loop_lag_ctx)
    # Last: after every other start-up, so that all it built is frozen.
    app.cleanup_ctx.append(frozen_startup_heap)
    if on_ready is not None:
        # After every resource's start-up (pool, key ring): the supervisor then counts this worker as started.
        async def started(app: web.Application) -> None:
            on_ready()

        app.on_startup.append(started)
    web.run_app(
        app,
        loop=_event_loop(),
        host=None if sock else host,
        port=None if sock else port,
        sock=sock,
        ssl_context=ssl_context,
        shutdown_timeout=20,
        access_log_format='%a "%r" %s %b %Tfs rid=%{X-Request-ID}o',
        print=lambda text: log.info("%s", text.strip()),
    )


def _serve_on(sock: socket.socket, ready: Any, certfile: str | None, keyfile: str | None) -> None:
    """A supervised worker's body: serve on the socket it was handed, and say when it has started."""
    _run_worker(certfile, keyfile, sock=sock, on_ready=ready.set)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (faster sockets and timers), else asyncio's (also while the loop's
    callbacks are probed, which only asyncio's loop allows)."""
    from perks.core.looplag import callbacks_probed

    if callbacks_probed():
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_workers(workers: int, host: str, port: int, certfile: str | None, keyfile: str | None) -> int:
    """N supervised processes on one port: a dead worker is replaced; SIGTERM or Ctrl-C stops them all (exit 0)."""
    from perks.supervisor import Supervisor, listening_sockets

    os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="perks-metrics-"))
    try:
        sockets = listening_sockets(host, port, workers)
    except OSError as exc:
        log.critical("cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        return 1
    log.info("serving on %s:%s with %d workers", host, sockets[0].getsockname()[1], workers)
    return Supervisor(_serve_on, sockets, (certfile, keyfile)).run()
