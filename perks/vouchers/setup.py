"""Voucher resources opened with the application (to be filled)."""

from typing import AsyncIterator

from aiohttp import web


async def vouchers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the key ring and the QR rendering pool; close them on shutdown."""
    yield
