"""HTTP: the OpenAPI document and a page to read it (self-contained, no CDN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from perks.core.endpoint import endpoint
from perks.core.jsonutil import json_response
from perks.core.openapi import build_openapi

routes = web.RouteTableDef()

OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict)
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)
_templates.filters["pretty"] = lambda value: json.dumps(value, ensure_ascii=False, indent=2)


def setup(app: web.Application) -> None:
    """Serve the documentation of ``app``, built once on first request (after every route is added)."""
    app[OPENAPI_DOCUMENT] = {}
    app.add_routes(routes)


def _document(request: web.Request) -> dict[str, Any]:
    cache = request.app[OPENAPI_DOCUMENT]
    if not cache:
        cache.update(build_openapi(request.app))
    return cache


@routes.get("/api/openapi.json")
@endpoint(tag="documentation", uses_database=False)
async def openapi_json(request: web.Request) -> web.Response:
    """This OpenAPI 3.1 document."""
    return json_response(_document(request))


@routes.get("/api/docs")
@endpoint(produces="text/html", tag="documentation", uses_database=False)
async def api_docs(request: web.Request) -> web.Response:
    """A page to read the API's documentation."""
    html = _templates.get_template("api_docs.html").render(doc=_document(request))
    return web.Response(text=html, content_type="text/html")
