"""The OpenAPI 3.1 document, built from the routes the application actually serves."""

from __future__ import annotations

import re
from typing import Any, Iterator

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from perks import __version__
from perks.core.endpoint import EndpointSpec, spec_of
from perks.core.errors import MESSAGES, Refusal
from perks.core.fields import CODE_PATTERN, MONTH_PATTERN

REF_TEMPLATE = "#/components/schemas/{model}"

GENERAL_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "invalid_credentials": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "already_voided": 409,
    "void_window_closed": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "idempotency_key_reused": 422,
    "too_many_attempts": 429,
    "internal_error": 500,
    "database_unavailable": 503,
}
STATUS_OF = {**GENERAL_STATUS, **Refusal.STATUS}


def served_routes(app: web.Application) -> Iterator[tuple[str, str, Any]]:
    """``(method, path template, handler)`` for every route served, sub-applications included."""
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        if isinstance(resource, web.StaticResource):
            continue
        yield route.method, resource.canonical, route.handler


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, plus the pattern a validator documents (``perks.core.fields.documented_pattern``):
    what the document says a field takes is what the service takes."""

    def function_after_schema(self, schema: core_schema.AfterValidatorFunctionSchema) -> JsonSchemaValue:
        result = super().function_after_schema(schema)
        pattern = getattr(schema["function"].get("function"), "__json_pattern__", None)
        if pattern and self.mode == "validation" and result.get("type") == "string" and "pattern" not in result:
            result = {**result, "pattern": pattern}
        return result


class _Schemas:
    """Collects every model the document names, then generates them in one pass.

    One pass lets pydantic give two models of the same class name (``ClientView`` of the clients and of the
    redemptions, say) distinct component names, instead of one silently replacing the other."""

    def __init__(self) -> None:
        self._wanted: list[tuple[int, str, TypeAdapter[Any], dict[str, Any]]] = []
        self.components: dict[str, Any] = {}

    def _want(self, annotation: Any, mode: str) -> dict[str, Any]:
        placeholder: dict[str, Any] = {}
        self._wanted.append((len(self._wanted), mode, TypeAdapter(annotation), placeholder))
        return placeholder

    def ref(self, annotation: Any) -> dict[str, Any]:
        """The schema of a response (filled in by :meth:`generate`)."""
        return self._want(annotation, "serialization")

    def input_ref(self, model: type[BaseModel]) -> dict[str, Any]:
        """The schema of a request body (filled in by :meth:`generate`)."""
        return self._want(model, "validation")

    def generate(self) -> None:
        """Fill in every schema handed out, and the components they refer to."""
        inputs = [(key, mode, adapter) for key, mode, adapter, _ in self._wanted]
        mapping, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE, schema_generator=_Generator)  # type: ignore[arg-type]
        for key, mode, _, placeholder in self._wanted:
            placeholder.update(mapping[(key, mode)])  # type: ignore[index]
        self.components.update(definitions.get("$defs", {}))


_CODE_SCHEMA = {"type": "string", "pattern": CODE_PATTERN, "description": "A code: `[a-z0-9_]{1,32}`."}
# The values of the path parameters, by name; any `*_id` is a UUID. A value outside them is 404 (400 for a month
# or a points source).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "code": _CODE_SCHEMA,
    "tier": _CODE_SCHEMA,
    "perk": _CODE_SCHEMA,
    "source": _CODE_SCHEMA,
    "month": {
        "type": "string",
        "pattern": MONTH_PATTERN,
        "description": "A month, `YYYY-MM` (years 2000 to 9998).",
    },
}
_ID_SCHEMA = {"type": "string", "format": "uuid"}
# Every page shows its errors as a page: these are the statuses a page of the portal or the wallet may answer.
PAGE_STATUSES = {
    303: "Redirected: to the login page without a session, or to the next page after a form.",
    400: "The form or the request is not valid.",
    401: "The session has expired (the wallet).",
    403: "Refused: a form without its CSRF token, or a role that may not do this.",
    404: "No such page or object.",
    409: "Refused by the rules (a voucher already redeemed, a quota used up, ...).",
    410: "The voucher or link has expired.",
    413: "The form is too large.",
    429: "Too many attempts; try again later.",
    503: "The database is unavailable; try again shortly.",
}
# Pages that read no session and change nothing answer only these.
PLAIN_PAGE_STATUSES = (400, 503)


def path_parameter_schema(name: str) -> dict[str, Any]:
    """The documented values of the path parameter ``name``."""
    if name in PATH_PARAMETERS:
        return PATH_PARAMETERS[name]
    return _ID_SCHEMA if name == "id" or name.endswith("_id") else {"type": "string"}


def _parameters(path: str, spec: EndpointSpec) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_parameter_schema(name)}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if spec.query is not None:
        schema = spec.query.model_json_schema(mode="validation", by_alias=True, schema_generator=_Generator)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = dict(prop)
            description = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    for header, declared in spec.headers.items():
        description, schema = declared if isinstance(declared, tuple) else (declared, {"type": "string"})
        params.append({"name": header, "in": "header", "required": False, "schema": schema, "description": description})
    return params


def error_codes(spec: EndpointSpec) -> list[str]:
    """Every error code a route may answer: its own, and those the endpoint decorator and middleware add."""
    raw_body = spec.body is None and spec.consumes != "application/json"
    # Any request may carry a query parameter or header with a NUL byte or invalid UTF-8: refused with 400.
    codes = [*spec.errors, "bad_request"]
    if spec.body is not None:
        codes += ["payload_too_large", "unsupported_media_type"]
    elif raw_body:
        codes.append("payload_too_large")  # a raw body's handler checks its content type itself (400)
    if spec.roles:
        codes += ["unauthorized", "forbidden"]
    if spec.uses_database:
        codes.append("database_unavailable")
    return list(dict.fromkeys(codes))


def _error_responses(spec: EndpointSpec, error_schema: dict[str, Any]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in error_codes(spec):
        by_status.setdefault(STATUS_OF[code], []).append(code)
    responses: dict[str, Any] = {}
    for status, status_codes in sorted(by_status.items()):
        text = "; ".join(f"`{code}`: {MESSAGES.get(code, code)}" for code in status_codes)
        responses[str(status)] = {"description": text, "content": {"application/json": {"schema": error_schema}}}
    return responses


def _page_responses(path: str, method: str, spec: EndpointSpec) -> dict[str, Any]:
    plain = method == "GET" and path.endswith("/login")
    statuses = PLAIN_PAGE_STATUSES if plain else sorted(PAGE_STATUSES)
    page = {"text/html": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {}
    for status in statuses:
        responses[str(status)] = {"description": PAGE_STATUSES[status]}
        if status != 303:
            responses[str(status)]["content"] = page
    return responses


def is_page(path: str, spec: EndpointSpec) -> bool:
    """Whether the route is a page of the portal, the wallet or the console (errors shown as pages), or a download
    there (a CSV), which without a session redirects to the login page as the pages do."""
    return spec.produces in ("text/html", "text/csv") and path.startswith(("/portal", "/wallet", "/console"))


def _operation(method: str, path: str, spec: EndpointSpec, schemas: _Schemas, error_schema: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_')}",
        "summary": spec.summary,
        "tags": [spec.tag] if spec.tag else [],
    }
    description = spec.description
    if spec.roles:
        roles = ", ".join(sorted(spec.roles))
        description = f"{description}\n\nRoles: {roles}.".strip()
        op["security"] = [{"bearerAuth": []}]
    if description:
        op["description"] = description
    params = _parameters(path, spec)
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.input_ref(spec.body)}},
        }
    elif spec.consumes != "application/json":
        op["requestBody"] = {"required": True, "content": {spec.consumes: {"schema": {"type": "string"}}}}
    success: dict[str, Any] = {"description": "Success."}
    if spec.status != 204:
        if spec.produces == "application/json":
            schema = schemas.ref(spec.response) if spec.response is not None else {"type": "object"}
            success["content"] = {"application/json": {"schema": schema}}
        else:
            success["content"] = {spec.produces: {"schema": {"type": "string"}}}
        for media_type in spec.alternatives:
            # Another representation of the same resource (a CSV download, say), chosen by a query parameter.
            success["content"][media_type] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(spec.status): success}
    if is_page(path, spec):
        if spec.produces != "text/html" and "content" in success:
            # A download: without a session it redirects to the login page, an HTML page, as the pages do.
            success["content"]["text/html"] = {"schema": {"type": "string"}}
        responses.update(_page_responses(path, method, spec))
    else:
        responses.update(_error_responses(spec, error_schema))
    op["responses"] = dict(sorted(responses.items()))
    return op


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every documented route ``app`` serves."""
    from perks.core.schemas import ErrorBody

    schemas = _Schemas()
    error_schema = schemas.ref(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in served_routes(app):
        spec = spec_of(handler)
        if spec is None:
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, spec, schemas, error_schema)
    schemas.generate()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "perks",
            "version": __version__,
            "description": (
                "Perks for a bank's most valuable clients at partner merchants. Errors always have the shape "
                '`{"error": {"code", "message", "details"}}`; a bad field gives 400 `bad_request` with '
                "`details.fields`. Lists take `?limit=` (1..500, default 50) and `&cursor=`. A NUL byte or "
                "invalid UTF-8 in any parameter, header, JSON string or form field is 400 `bad_request` naming "
                "it; a JSON body sent with another content type is 415 `unsupported_media_type`."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def undocumented_routes(app: web.Application) -> list[str]:
    """``"METHOD path"`` of every served route without a declaration."""
    return [f"{m} {p}" for m, p, handler in served_routes(app) if spec_of(handler) is None]
