"""HTTP routes (to be filled)."""

from aiohttp import web

routes = web.RouteTableDef()
