"""The OpenAPI 3.1 document, built from the routes the application actually serves."""

from __future__ import annotations

import re
from typing import Any, Iterator

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from perks import __version__
from perks.core.endpoint import EndpointSpec, spec_of
from perks.core.errors import MESSAGES, Refusal

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


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, annotation: Any) -> dict[str, Any]:
        schema = TypeAdapter(annotation).json_schema(ref_template=REF_TEMPLATE, mode="serialization")
        self.components.update(schema.pop("$defs", {}))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            name = annotation.__name__
            self.components[name] = schema
            return {"$ref": REF_TEMPLATE.format(model=name)}
        return schema

    def input_ref(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
        self.components.update(schema.pop("$defs", {}))
        name = model.__name__
        self.components[name] = schema
        return {"$ref": REF_TEMPLATE.format(model=name)}


def _parameters(path: str, spec: EndpointSpec, schemas: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if spec.query is not None:
        schema = spec.query.model_json_schema(mode="validation", by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = dict(prop)
            description = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    for header, description in spec.headers.items():
        params.append({"name": header, "in": "header", "required": False, "schema": {"type": "string"}, "description": description})
    return params


def _operation(method: str, path: str, spec: EndpointSpec, schemas: _Schemas) -> dict[str, Any]:
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
    params = _parameters(path, spec, schemas)
    if params:
        op["parameters"] = params
    raw_body = spec.body is None and spec.consumes != "application/json"
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.input_ref(spec.body)}},
        }
    elif raw_body:
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
    codes = list(spec.errors)
    if spec.body is not None or spec.query is not None or raw_body:
        codes.append("bad_request")
    if spec.body is not None or raw_body:
        codes.append("payload_too_large")
    if spec.roles:
        codes += ["unauthorized", "forbidden"]
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(STATUS_OF[code], []).append(code)
    for status, status_codes in sorted(by_status.items()):
        text = "; ".join(f"`{code}`: {MESSAGES.get(code, code)}" for code in status_codes)
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}},
        }
    op["responses"] = responses
    return op


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every documented route ``app`` serves."""
    from perks.core.schemas import ErrorBody

    schemas = _Schemas()
    schemas.ref(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in served_routes(app):
        spec = spec_of(handler)
        if spec is None:
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, spec, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "perks",
            "version": __version__,
            "description": (
                "Perks for a bank's most valuable clients at partner merchants. Errors always have the shape "
                '`{"error": {"code", "message", "details"}}`; a bad field gives 400 `bad_request` with '
                "`details.fields`. Lists take `?limit=` (1..500, default 50) and `&cursor=`."
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
