"""Console pages: the programme — tiers, perks, the tier × perk entitlement matrix, the points rules.

The matrix is one form. A cell's yearly quota is entered as a number, ``*`` for unlimited, or left blank for
no entitlement at all; its monthly cap as a number, or blank for no monthly cap. Its columns come from
``MATRIX_COLUMNS`` so that a later field of an entitlement (a required tag, say) is one more entry there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from merchant_portal.console.common import (
    connection, notice_of, problems_of, read_form, reader, show, translate_problem, writer_form,
)
from merchant_portal.pages import redirect, site_of
from perks.catalogue import service as catalogue
from perks.catalogue.models import EntitlementPut, PerkCreate, PerkPatch, TierCreate, TierPatch
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError, BadRequest, Conflict
from perks.core.ids import parse_code
from perks.points import rules
from perks.points.models import RulePut, SourcePath

routes = web.RouteTableDef()
FORM_ERRORS = (BadRequest, Conflict)
UNLIMITED = "*"


@dataclass(frozen=True)
class MatrixColumn:
    """One input of every matrix cell: the entitlement field it sets and how its text is read."""

    name: str
    label: str
    blank_means: str  # "absent": a blank makes no entitlement; "null": a blank is null (no limit)

    def read(self, text: str) -> tuple[Any, str | None]:
        """``(value, problem)`` of the cell's text."""
        text = text.strip()
        if text == "":
            return None, None
        if text in (UNLIMITED, "∞") and self.blank_means == "absent":
            return None, None
        if re.fullmatch(r"\d{1,10}", text):
            return int(text), None
        return None, "must be a whole number"


MATRIX_COLUMNS = [
    MatrixColumn("yearly_quota", "console.matrix.yearly_quota", "absent"),
    MatrixColumn("monthly_cap", "console.matrix.monthly_cap", "null"),
]


def cell_name(column: str, tier: str, perk: str) -> str:
    """The form field of one input of one cell."""
    return f"{column}.{tier}.{perk}"


def cell_text(entitlement: dict[str, Any] | None, column: MatrixColumn) -> str:
    """What a cell's input shows for the entitlement it holds."""
    if entitlement is None:
        return ""
    value = entitlement.get(column.name)
    if value is None:
        return UNLIMITED if column.blank_means == "absent" else ""
    return str(value)


async def _grid(conn: Any) -> tuple[list[dict], list[dict], dict[tuple[str, str], dict[str, Any]]]:
    tiers = await catalogue.list_tiers(conn, None, 1000)
    perks = await catalogue.list_perks(conn, None, 1000)
    granted = {}
    for tier in tiers:
        for item in await catalogue.list_entitlements(conn, tier["code"], None, 1000):
            granted[(tier["code"], item["perk"])] = item
    return tiers, perks, granted


@routes.get("/programme")
@endpoint(produces="text/html", tag="console")
async def programme_page(request: web.Request) -> web.Response:
    """Tiers, perks, the entitlement matrix and the points rules."""
    return await _show(request)


async def _show(request: web.Request, *, failed: str | None = None, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    reader(request)
    async with connection(request) as conn:
        tiers, perks, granted = await _grid(conn)
        points_rules = await rules.list_rules(conn, None, 1000)
    cells = {}
    for tier in tiers:
        for perk in perks:
            for column in MATRIX_COLUMNS:
                name = cell_name(column.name, tier["code"], perk["code"])
                cells[name] = cell_text(granted.get((tier["code"], perk["code"])), column)
    if failed == "matrix" and values:
        cells |= values
    context = {
        "tab": "programme", "tiers": tiers, "perks": perks, "cells": cells, "columns": MATRIX_COLUMNS,
        "cell_name": cell_name, "rules": points_rules, "failed": failed, "errors": errors or {},
        "values": values or {}, "notice": notice_of(request),
    }
    return show(request, "console/programme.html", context, status=status)


def _done(request: web.Request, anchor: str) -> web.Response:
    return redirect(site_of(request).url(f"/programme?done=saved#{anchor}"))


async def _failed(request: web.Request, form_id: str, error: ApiError, values: dict[str, Any]) -> web.Response:
    return await _show(request, failed=form_id, errors=problems_of(request, error), values=values,
                       status=error.status)


@routes.post("/programme/tiers")
@endpoint(produces="text/html", tag="console")
async def tier_create(request: web.Request) -> web.Response:
    """Add a tier (a taken code or rank is said plainly)."""
    actor, form = await writer_form(request)
    body, values, problems = read_form(form, TierCreate, {"code": "text", "name": "text", "rank": "int",
                                                          "min_points": "int"})
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await catalogue.create_tier(conn, actor, **body.model_dump())
    except FORM_ERRORS as error:
        return await _failed(request, "tier:new", error, values)
    return _done(request, "tiers")


@routes.post("/programme/tiers/{code}")
@endpoint(produces="text/html", tag="console")
async def tier_update(request: web.Request) -> web.Response:
    """Rename a tier, re-rank it or change its minimum points."""
    actor, form = await writer_form(request)
    code = parse_code(request.match_info["code"])
    body, values, problems = read_form(form, TierPatch, {"name": "text", "rank": "int", "min_points": "int"})
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await catalogue.update_tier(conn, actor, code, **body.changes())  # type: ignore[attr-defined]
    except FORM_ERRORS as error:
        return await _failed(request, f"tier:{code}", error, values)
    return _done(request, "tiers")


PERK_KINDS = {"name": "text", "category": "text", "voucher_ttl_seconds": "int", "birthday_only": "bool"}


@routes.post("/programme/perks")
@endpoint(produces="text/html", tag="console")
async def perk_create(request: web.Request) -> web.Response:
    """Add a perk."""
    actor, form = await writer_form(request)
    body, values, problems = read_form(form, PerkCreate, {"code": "text", **PERK_KINDS})
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await catalogue.create_perk(conn, actor, **body.model_dump())
    except FORM_ERRORS as error:
        return await _failed(request, "perk:new", error, values)
    return _done(request, "perks")


@routes.post("/programme/perks/{code}")
@endpoint(produces="text/html", tag="console")
async def perk_update(request: web.Request) -> web.Response:
    """Change a perk's name, category, voucher lifetime or birthday-only flag."""
    actor, form = await writer_form(request)
    code = parse_code(request.match_info["code"])
    body, values, problems = read_form(form, PerkPatch, PERK_KINDS)
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await catalogue.update_perk(conn, actor, code, **body.changes())  # type: ignore[attr-defined]
    except FORM_ERRORS as error:
        return await _failed(request, f"perk:{code}", error, values)
    return _done(request, "perks")


@routes.post("/programme/matrix")
@endpoint(produces="text/html", tag="console")
async def matrix_save(request: web.Request) -> web.Response:
    """Save the whole entitlement matrix at once: every changed cell granted, replaced or withdrawn, or none."""
    actor, form = await writer_form(request)
    async with connection(request) as conn:
        tiers, perks, granted = await _grid(conn)
        typed: dict[str, str] = {}
        problems: dict[str, str] = {}
        wanted: dict[tuple[str, str], dict[str, Any] | None] = {}
        for tier in tiers:
            for perk in perks:
                key = (tier["code"], perk["code"])
                names = {column.name: cell_name(column.name, *key) for column in MATRIX_COLUMNS}
                texts = {column.name: form.get(names[column.name], "") for column in MATRIX_COLUMNS}
                if not all(isinstance(text, str) for text in texts.values()):
                    raise BadRequest()
                for column in MATRIX_COLUMNS:
                    typed[names[column.name]] = texts[column.name]
                if texts[MATRIX_COLUMNS[0].name].strip() == "":
                    wanted[key] = None
                    continue
                data: dict[str, Any] = {}
                for column in MATRIX_COLUMNS:
                    value, problem = column.read(texts[column.name])
                    if problem:
                        problems[names[column.name]] = translate_problem(request, problem)
                    data[column.name] = value
                try:
                    wanted[key] = EntitlementPut.model_validate(data).model_dump()
                except ValueError as exc:
                    for error in getattr(exc, "errors", lambda: [])():
                        field = str(error["loc"][0]) if error["loc"] else MATRIX_COLUMNS[0].name
                        problems.setdefault(names.get(field, names[MATRIX_COLUMNS[0].name]),
                                            translate_problem(request, error["msg"]))
        if problems:
            return await _show(request, failed="matrix", errors=problems, values=typed, status=400)
        async with conn.transaction():
            for key, values in wanted.items():
                current = granted.get(key)
                if values is None:
                    if current is not None:
                        await catalogue.delete_entitlement(conn, actor, *key)
                elif current is None or any(current.get(name) != value for name, value in values.items()):
                    await catalogue.put_entitlement(conn, actor, *key, **values)
    return _done(request, "matrix")


@routes.post("/programme/rules")
@endpoint(produces="text/html", tag="console")
async def rule_put(request: web.Request) -> web.Response:
    """Set the points rule of a source (points per yuan)."""
    actor, form = await writer_form(request)
    source_text = form.get("source", "")
    rate_text = form.get("points_per_yuan", "")
    values = {"source": source_text, "points_per_yuan": rate_text}
    try:
        problems: dict[str, str] = {}
        source = None
        try:
            source = SourcePath.model_validate({"source": source_text}).source
        except ValueError:
            problems["source"] = "String should match pattern '^[a-z0-9_]{1,32}$'"
        body, _, rate_problems = read_form(form, RulePut, {"points_per_yuan": "text"})
        problems |= rate_problems
        if problems or body is None or source is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await rules.put_rule(conn, actor, source, body.points_per_yuan)  # type: ignore[attr-defined]
    except FORM_ERRORS as error:
        return await _failed(request, "rule", error, values)
    return _done(request, "rules")
