"""Request bodies and queries validated by pydantic models; failures become 400 with per-field details."""

from __future__ import annotations

import json
from typing import Any, Iterator, TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from perks.core.errors import BadRequest, UnsupportedMediaType

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


NUL_PROBLEM = "must not contain the NUL character"
UTF8_PROBLEM = "must be valid UTF-8"
JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be taken as text (a NUL byte, which PostgreSQL cannot store, or invalid UTF-8)."""
    if "\x00" in value:
        return NUL_PROBLEM
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp keeps undecodable header bytes as lone surrogates
        return UTF8_PROBLEM
    return None


def _pairs(raw: bytes | str) -> Iterator[tuple[bytes, bytes]]:
    """The undecoded ``name=value`` pairs of a query string or a form-encoded body."""
    data = raw.encode("latin-1", "replace") if isinstance(raw, str) else raw
    for part in data.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            yield unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))


def _encoded_pair_problems(raw: bytes | str) -> dict[str, str]:
    problems: dict[str, str] = {}
    for raw_name, raw_value in _pairs(raw):
        name = raw_name.decode("utf-8", "replace")
        try:
            raw_name.decode("utf-8")
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            problems.setdefault(name, UTF8_PROBLEM)
            continue
        problem = text_problem(name) or text_problem(value)
        if problem:
            problems.setdefault(name.replace("\x00", "\\0"), problem)
    return problems


def refuse_unsafe_input(request: web.Request, headers: tuple[str, ...] = ()) -> None:
    """400 naming each path parameter, query parameter or ``headers`` entry holding NUL or invalid UTF-8.

    Run before a handler reads any of them, so that no such text ever reaches PostgreSQL."""
    problems = _encoded_pair_problems(request.rel_url.raw_query_string)
    for name, value in request.match_info.items():
        problem = text_problem(value)
        if problem:
            problems.setdefault(name, problem)
    for name in headers:
        value = request.headers.get(name)
        problem = text_problem(value) if value is not None else None
        if problem:
            problems.setdefault(name, problem)
    if problems:
        raise BadRequest(problems)


async def refuse_unsafe_form(request: web.Request) -> None:
    """400 naming each field of a posted form that holds NUL or invalid UTF-8 (a page's forms)."""
    if request.content_type not in FORM_MEDIA_TYPES:
        return
    if request.content_type == FORM_MEDIA_TYPES[0]:
        problems = _encoded_pair_problems(await request.read())
    else:
        try:
            form = await request.post()  # kept by aiohttp: the handler's own call reads the same form
        except (ValueError, AssertionError, LookupError):  # no boundary, a broken part, bad UTF-8, unknown charset
            raise BadRequest({"body": "not a readable multipart form"}) from None
        problems = {}
        for name, value in form.items():
            problem = text_problem(name) or (text_problem(value) if isinstance(value, str) else None)
            if problem:
                problems.setdefault(name.replace("\x00", "\\0"), problem)
    if problems:
        raise BadRequest(problems)


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                yield name.replace("\x00", "\\0")
            else:
                yield from _nul_paths(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}.{index}" if path else str(index))


def require_media_type(request: web.Request, media_type: str) -> None:
    """415 unless a request with a body declares ``media_type`` (parameters such as ``charset`` aside)."""
    if request.content_type != media_type:
        raise UnsupportedMediaType(details={"expected": media_type})


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; 415 for another content type, 400 naming each bad field otherwise."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest({"body": "a JSON object is required"})
    require_media_type(request, JSON_MEDIA_TYPE)
    if b"\\u0000" in raw:
        # JSON may spell a NUL as an escape: refused here, naming the field, before PostgreSQL ever sees it.
        try:
            fields = dict.fromkeys(_nul_paths(json.loads(raw), ""), NUL_PROBLEM)
        except ValueError:
            fields = {}  # malformed: pydantic names the problem below
        if fields:
            raise BadRequest(fields)
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
