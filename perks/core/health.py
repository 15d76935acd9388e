"""HTTP: liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from perks.core.appkeys import CONFIG, METRICS, POOL
from perks.core.db import is_database_unavailable
from perks.core.endpoint import endpoint
from perks.core.errors import DatabaseUnavailable, Unauthorized
from perks.core.jsonutil import json_response

routes = web.RouteTableDef()


class Status(BaseModel):
    status: str


@routes.get("/healthz")
@endpoint(response=Status, tag="operations", uses_database=False)
async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return json_response({"status": "ok"})


@routes.get("/readyz")
@endpoint(response=Status, errors=("database_unavailable",), tag="operations")
async def readyz(request: web.Request) -> web.Response:
    """The service can answer: its database responds."""
    try:
        async with asyncio.timeout(3):
            async with request.config_dict[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:
        if is_database_unavailable(exc):
            raise DatabaseUnavailable() from None
        raise
    return json_response({"status": "ok"})


@routes.get("/metrics")
@endpoint(produces="text/plain", errors=("unauthorized",), tag="operations", uses_database=False)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics in the text exposition format.

    When `PERKS_METRICS_TOKEN` is set, only with `Authorization: Bearer <that token>` (401 otherwise); without
    it, keep `/metrics` off the public network (serve it behind the proxy's internal listener only)."""
    expected = request.config_dict[CONFIG].metrics_token
    if expected is not None:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode()):
            raise Unauthorized()
    body = await asyncio.to_thread(request.config_dict[METRICS].render)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
