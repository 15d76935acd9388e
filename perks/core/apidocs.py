"""HTTP: the OpenAPI document and its reference page — Swagger UI, vendored (no CDN), under a strict CSP."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from perks.core.endpoint import endpoint
from perks.core.jsonutil import json_response
from perks.core.openapi import build_openapi

routes = web.RouteTableDef()

OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict)
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/api/docs/static"
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)
# Swagger UI runs from our own files only, nothing inline (Chromium reports no violation with this policy);
# "Try it out" calls this very service ('self').
DOCS_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)


def setup(app: web.Application) -> None:
    """Serve the documentation of ``app``, built once on first request (after every route is added)."""
    app[OPENAPI_DOCUMENT] = {}
    app.add_routes(routes)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR)


def _document(request: web.Request) -> dict[str, Any]:
    cache = request.app[OPENAPI_DOCUMENT]
    if not cache:
        cache.update(build_openapi(request.app))
    return cache


def operations_by_tag(document: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """``{tag: [{method, path, summary}]}``: the page's outline for readers without JavaScript."""
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for tag in operation.get("tags") or ["other"]:
                grouped[tag].append({"method": method.upper(), "path": path, "summary": operation.get("summary", "")})
    return dict(sorted(grouped.items()))


@routes.get("/api/openapi.json")
@endpoint(tag="documentation", uses_database=False)
async def openapi_json(request: web.Request) -> web.Response:
    """This OpenAPI 3.1 document."""
    return json_response(_document(request))


@routes.get("/api/docs")
@endpoint(produces="text/html", tag="documentation", uses_database=False)
async def api_docs(request: web.Request) -> web.Response:
    """The API reference: Swagger UI, grouped by tag, with "try it out" (paste a bearer token under Authorize)."""
    document = _document(request)
    html = _templates.get_template("api_docs.html").render(
        doc=document, groups=operations_by_tag(document), static=STATIC_PREFIX
    )
    response = web.Response(text=html, content_type="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
