"""Periodic clean-up every worker runs: idempotency keys past their replay window.

Running it in several processes at once is harmless: each pass is one DELETE of rows nobody reads again.
(Old login failures are forgotten by the login itself.)"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import web

from perks.core.appkeys import CLOCK, POOL
from perks.core.background import running
from perks.core.db import is_database_unavailable
from perks.redemption.idempotency import purge_expired

log = logging.getLogger(__name__)

EVERY_SECONDS = 600.0


async def sweep(app: web.Application) -> None:
    """One pass of every clean-up."""
    async with app[POOL].acquire() as conn:
        keys = await purge_expired(conn, app[CLOCK].now())
    if keys:
        log.info("housekeeping: %d idempotency keys past their replay window deleted", keys)


async def _loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(EVERY_SECONDS)
        try:
            await sweep(app)
        except Exception as exc:
            if is_database_unavailable(exc):
                log.warning("housekeeping skipped: the database is unavailable")
            else:
                log.exception("housekeeping failed")


async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run :func:`sweep` every ten minutes while the application runs."""
    async with running(_loop(app), "perks-housekeeping"):
        yield
