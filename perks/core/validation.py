"""Request bodies and queries validated by pydantic models; failures become 400 with per-field details."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from perks.core.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """A JSON request body: unknown fields are refused and types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters: strings converted to the declared types; unknown ones ignored."""

    model_config = ConfigDict(extra="ignore")


def field_errors(exc: ValidationError) -> dict[str, str]:
    """``{"field": "problem"}`` from a pydantic error, one problem per field."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "json_invalid":
            name, message = "body", "malformed JSON"
        elif error["type"] in ("model_type", "model_attributes_type"):
            name, message = "body", "must be a JSON object"
        fields.setdefault(name, message)
    return fields


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; 400 naming each bad field otherwise."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest({"body": "a JSON object is required"})
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise BadRequest(field_errors(exc)) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    """The request's query parameters as ``model``; 400 naming each bad parameter otherwise."""
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(field_errors(exc)) from None


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or 400 with per-field details (for bodies that are not JSON)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(field_errors(exc)) from None
