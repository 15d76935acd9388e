"""Middlewares: request ids, the contract's error shape for every failure, and request metrics."""

from __future__ import annotations

import logging
import re
import secrets
import time

from aiohttp import web

from perks.core.appkeys import METRICS, REQUEST_ID
from perks.core.db import is_database_unavailable
from perks.core.errors import MESSAGES, ApiError, DatabaseUnavailable
from perks.core.jsonutil import json_response
from perks.core.logs import request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# aiohttp's own HTTP exceptions, mapped onto the contract's codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "too_many_attempts",
}


def code_for_status(status: int) -> str | None:
    """The contract's code for the status of one of aiohttp's HTTP exceptions, where it has one of its own."""
    return HTTP_CODES.get(status)


def error_response(error: ApiError, request_id: str) -> web.Response:
    """The JSON response for ``error``."""
    headers = {**error.headers, REQUEST_ID_HEADER: request_id}
    return json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def request_context(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Give the request an id (the caller's, when it is a sane one), in logs and on the response."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    finally:
        request_id_var.reset(token)


@web.middleware
async def errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Turn every failure into the contract's error shape; a 500 is logged, never explained."""
    request_id = request.get(REQUEST_ID, "-")
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = code_for_status(exc.status) or ("bad_request" if exc.status < 500 else "internal_error")
        error = ApiError(code, status=exc.status)
        if exc.status == 405:
            error.headers["Allow"] = exc.headers.get("Allow", "")
        return error_response(error, request_id)
    except Exception as exc:
        if is_database_unavailable(exc):  # the classification lives in perks.core.db
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_response(DatabaseUnavailable(), request_id)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError("internal_error", MESSAGES["internal_error"], status=500), request_id)


@web.middleware
async def metrics(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Count requests and time them by route template (never by raw path, which holds ids)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        registry = request.config_dict[METRICS]
        registry.http_requests.labels(request.method, route, str(status)).inc()
        registry.http_latency.labels(request.method, route).observe(time.perf_counter() - started)
