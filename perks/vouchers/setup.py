"""Voucher resources opened with the application: the key ring, kept in step with the database by a LISTEN
connection (and a periodic re-read), and the process pool that renders QR images."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import asyncpg
from aiohttp import web

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.background import running
from perks.core.clock import Clock
from perks.core.config import Config
from perks.core.db import UNAVAILABLE_ERRORS, init_connection, resolve_database_url
from perks.vouchers.appkeys import KEYRING, QR_POOL
from perks.vouchers.keyring import KeyRing
from perks.vouchers.keys import CHANNEL, RELOAD_EVERY_SECONDS, KeyDecryptionError, ensure_active_key, load_keys
from perks.vouchers.qr_pool import QrPool

log = logging.getLogger(__name__)

MAX_RECONNECT_DELAY_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# How the listening connection names itself in pg_stat_activity.
LISTENER_APPLICATION_NAME = "perks-keyring"


async def refresh_ring(conn: asyncpg.Connection, config: Config, ring: KeyRing, clock: Clock) -> None:
    """Load the live keys into ``ring``, making an active key first if the database has none."""
    keys = await load_keys(conn, config, clock.now())
    if not any(key.active for key in keys):
        await ensure_active_key(conn, config)
        keys = await load_keys(conn, config, clock.now())
    ring.replace(keys)


class KeyWatcher:
    """Reloads a key ring on every NOTIFY of a key change, and every RELOAD_EVERY_SECONDS in case one was missed;
    reconnects, with a growing delay, whenever the database goes away."""

    def __init__(self, ring: KeyRing, config: Config, clock: Clock, url: str,
                 period: float = RELOAD_EVERY_SECONDS) -> None:
        self._ring = ring
        self._config = config
        self._clock = clock
        self._url = url
        self._period = period
        self._wake = asyncio.Event()
        self._delay = 1.0

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            try:
                await self._session()
            except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("signing keys: database connection lost (%s); retrying in %.0f s",
                            type(exc).__name__, self._delay)
            except KeyDecryptionError as exc:
                log.error("signing keys not reloaded: %s", exc)
            except Exception:
                # Never let the watcher die: a ring that stops following rotations fails quietly later.
                log.exception("signing keys: unexpected error while watching for changes")
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_RECONNECT_DELAY_SECONDS)

    async def _session(self) -> None:
        conn = await asyncpg.connect(
            self._url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        try:
            await init_connection(conn)
            conn.add_termination_listener(self._on_connection_lost)
            # Listen before loading, so that no change slips between the load and the first notification.
            await conn.add_listener(CHANNEL, self._on_notify)
            self._delay = 1.0
            while True:
                self._wake.clear()
                await refresh_ring(conn, self._config, self._ring, self._clock)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._period):
                        await self._wake.wait()
                if conn.is_closed():
                    raise ConnectionError("the listening connection closed")
        finally:
            await _close_quietly(conn)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._wake.set()

    def _on_connection_lost(self, conn: Any) -> None:
        self._wake.set()


async def _close_quietly(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:  # a connection already broken: drop it, the loop reconnects
        conn.terminate()


async def vouchers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the key ring and the QR rendering pool; close them on shutdown."""
    config, clock = app[CONFIG], app[CLOCK]
    ring = KeyRing(clock)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            async with app[POOL].acquire() as conn:
                await refresh_ring(conn, config, ring, clock)
    except (*UNAVAILABLE_ERRORS, TimeoutError):
        # Start anyway, as the pool does: the watcher loads the keys once the database answers.
        log.warning("signing keys not loaded yet: the database is unavailable")
    app[KEYRING] = ring
    watcher = KeyWatcher(ring, config, clock, await resolve_database_url(config))
    app[QR_POOL] = qr_pool = QrPool()
    qr_pool.start()
    try:
        async with running(watcher.run(), "perks-keyring-watcher"):
            yield
    finally:
        await asyncio.to_thread(qr_pool.shutdown)
