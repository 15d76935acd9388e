"""What every console page shares: the staff principal, role checks, forms read into the API's own models."""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping

import asyncpg
from aiohttp import web
from multidict import MultiDictProxy
from pydantic import BaseModel, ValidationError

from merchant_portal.i18n import catalogue, language_of
from merchant_portal.pages import LoginRequired, checked_form, current_principal, form_text, redirect, site_of
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_WRITERS, Principal
from perks.core.errors import ApiError, BadRequest, Forbidden
from perks.core.validation import field_errors
from perks.quotas import quota_period

PAGE_SIZE = 25
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@web.middleware
async def login_redirect(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """A page reached without a staff session goes to the login form (the portal's errors do the rest)."""
    try:
        return await handler(request)
    except LoginRequired:
        return redirect(site_of(request).url("/login"))


def reader(request: web.Request) -> Principal:
    """The staff member of the console's session (any staff role may read)."""
    return current_principal(request)


async def writer_form(request: web.Request, roles: frozenset[str] = BANK_STAFF_WRITERS) -> tuple[Principal, MultiDictProxy[Any]]:
    """The principal and the CSRF-checked form of a change; an auditor (or a role not in ``roles``) is refused."""
    actor = current_principal(request)
    if actor.role not in roles:
        raise Forbidden()
    return actor, await checked_form(request)


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one page."""
    async with request.config_dict[POOL].acquire() as conn:
        yield conn


def now_of(request: web.Request) -> Any:
    """The service clock's instant."""
    return request.config_dict[CLOCK].now()


def tz_of(request: web.Request) -> Any:
    """The bank's time zone."""
    return request.config_dict[CONFIG].timezone


def this_year(request: web.Request) -> int:
    """The current quota year in the bank's time zone."""
    return quota_period(now_of(request), tz_of(request))[0]


def translate_problem(request: web.Request, problem: str) -> str:
    """A field problem of the contract (English) in the reader's language; numbers in it are kept."""
    numbers = _NUMBER.findall(problem)
    template = _NUMBER.sub("{n}", problem)
    text = catalogue(language_of(request)).get(f"problem.{template}")
    if text is None:
        return problem
    for number in numbers:
        text = text.replace("{n}", number, 1)
    return text


def problems_of(request: web.Request, error: ApiError) -> dict[str, str]:
    """``{field: problem in words}`` of a 400 or 409 of the contract (``body`` when no field is named)."""
    fields = error.details.get("fields") or {}
    if not fields:
        return {"body": _code_text(request, error.code)}
    return {name: translate_problem(request, str(problem)) for name, problem in fields.items()}


def _code_text(request: web.Request, code: str) -> str:
    strings = catalogue(language_of(request))
    return strings.get(f"error.{code}") or strings["error.unknown"]


# Reading forms into the API's models: the same validation, the same messages, beside the same fields.

Kinds = Mapping[str, str]


def form_values(form: MultiDictProxy[Any], kinds: Kinds) -> tuple[dict[str, Any], dict[str, str]]:
    """The form's fields as JSON-like values by ``kinds`` (``text``, ``text?``, ``int``, ``int?``, ``bool``):
    ``?`` means a blank field is null; ``text?`` left out of the form is left out of the result (not changed)."""
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, kind in kinds.items():
        raw = form_text(form, name, 2000)
        if kind == "bool":
            data[name] = form.get(name) in ("1", "on", "true")
        elif kind.startswith("int"):
            if raw == "":
                if kind.endswith("?"):
                    data[name] = None
                else:
                    problems[name] = "Field required"
            elif re.fullmatch(r"-?\d{1,19}", raw):
                data[name] = int(raw)
            else:
                problems[name] = "must be a whole number"
        elif kind.endswith("?"):
            if name in form:
                data[name] = raw or None
        else:
            data[name] = raw
    return data, problems


def read_form(form: MultiDictProxy[Any], model: type[BaseModel], kinds: Kinds) -> tuple[BaseModel | None, dict[str, Any], dict[str, str]]:
    """``(model or None, the values, {field: contract problem})``: the form validated by the API's body model."""
    data, problems = form_values(form, kinds)
    usable = {name: value for name, value in data.items() if name not in problems}
    try:
        # As JSON, exactly as the API reads its bodies (strict types, UUIDs and dates from text).
        parsed = model.model_validate_json(json.dumps(usable))
    except ValidationError as exc:
        for name, problem in field_errors(exc).items():
            problems.setdefault(name, problem)
        parsed = None
    return (None if problems else parsed), data, problems


def bad_request(problems: dict[str, str]) -> BadRequest:
    """The API's 400 naming ``problems``, for the page to show beside its fields."""
    return BadRequest(problems)


def page_links(request: web.Request, next_cursor: str | None) -> dict[str, Any]:
    """The list's next page (keyset cursor) and its first page, keeping the filters."""
    query = request.rel_url.query
    first = str(request.rel_url.with_query({k: v for k, v in query.items() if k != "cursor"}))
    nxt = str(request.rel_url.update_query(cursor=next_cursor)) if next_cursor else None
    return {"next_url": nxt, "first_url": first if "cursor" in query else None}


def show(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A console page: ``render`` plus ``when(instant)``, an instant in the bank's time zone."""
    from merchant_portal.pages import render

    tz = tz_of(request)

    def when(instant: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return instant.astimezone(tz).strftime(fmt) if instant else "—"

    return render(request, template, {"when": when} | context, status=status)


def notice_of(request: web.Request) -> str | None:
    """The words for a change just made (``?done=`` after a form's redirect), when it is one we name."""
    from merchant_portal.i18n import translator

    done = request.query.get("done")
    if not done or not done.replace("_", "").isalnum():
        return None
    key = f"console.done.{done}"
    text = translator(language_of(request))(key)
    return None if text == key else text
