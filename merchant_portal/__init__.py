"""The merchant portal (/portal) and the client's wallet (/wallet): server-rendered pages."""

from aiohttp import web


def setup_portal(app: web.Application) -> None:
    """Mount the portal and the wallet on ``app`` (to be filled)."""
