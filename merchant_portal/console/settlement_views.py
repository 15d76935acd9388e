"""Console pages (being built)."""

from aiohttp import web

routes = web.RouteTableDef()
