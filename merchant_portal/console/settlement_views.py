"""Console pages: settlement (a month's statements for every partner, one statement with its lines and
adjustments, its CSV, finalizing with a confirmation) and redemptions (list, filters, a void with a reason)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from merchant_portal.console.common import (
    PAGE_SIZE, connection, notice_of, now_of, page_links, problems_of, reader, show, tz_of,
    writer_form,
)
from merchant_portal.pages import redirect, site_of
from perks.catalogue import service as catalogue
from perks.core.auth import BANK_ADMINS, BANK_STAFF_WRITERS
from perks.core.clock import date_bounds
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError, BadRequest, Conflict
from perks.core.ids import parse_code, parse_id
from perks.core.today import bank_today
from perks.merchants import queries as merchant_queries
from perks.redemption import staff_queries
from perks.redemption.models import VoidRequest
from perks.redemption.voids import void
from perks.settlement import service as settlement
from perks.settlement.periods import Month
from perks.settlement.statement_csv import statement_csv

routes = web.RouteTableDef()


def _month_or_last(request: web.Request, text: str | None) -> Month:
    """The month asked for, else the last ended month in the bank's time zone (the one to settle)."""
    if text:
        return Month.parse(text)
    today = bank_today(request)
    first = today.replace(day=1) - timedelta(days=1)
    return Month(first.year, first.month)


@routes.get("/settlement")
@endpoint(produces="text/html", tag="console")
async def settlement_page(request: web.Request) -> web.Response:
    """A month's settlement: every partner's statement totals, open or finalized, and their sum."""
    reader(request)
    month = _month_or_last(request, request.query.get("month"))
    async with connection(request) as conn:
        result = await settlement.month_settlement(conn, month)
    return show(request, "console/settlement.html", {"tab": "settlement", "month": str(month), "result": result,
                                                     "previous": str(Month(*_before(month))), "next": str(month.next())})


def _before(month: Month) -> tuple[int, int]:
    return (month.year, month.month - 1) if month.month > 1 else (month.year - 1, 12)


@routes.get("/settlement/{merchant_id}/{month}")
@endpoint(produces="text/html", tag="console")
async def statement_page(request: web.Request) -> web.Response:
    """One statement: its lines, adjustments and totals; finalize it (administrators) once the month has ended."""
    return await _statement(request)


async def _statement(request: web.Request, *, errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    reader(request)
    merchant_id, month = parse_id(request.match_info["merchant_id"]), Month.parse(request.match_info["month"])
    async with connection(request) as conn:
        statement = await settlement.get_statement(conn, merchant_id, month)
    context = {"tab": "settlement", "statement": statement, "errors": errors or {},
               "ended": now_of(request) >= month.ends_at(tz_of(request)),
               "notice": notice_of(request)}
    return show(request, "console/statement.html", context, status=status)


@routes.get("/settlement/{merchant_id}/{month}/csv")
@endpoint(produces="text/csv", errors=("not_found",), tag="console")
async def statement_download(request: web.Request) -> web.StreamResponse:
    """The statement as the API's CSV (UTF-8 with a byte-order mark, CRLF, a `total` row)."""
    reader(request)
    merchant_id, month = parse_id(request.match_info["merchant_id"]), Month.parse(request.match_info["month"])
    async with connection(request) as conn:
        statement = await settlement.get_statement(conn, merchant_id, month)
    return statement_csv(statement)


@routes.post("/settlement/{merchant_id}/{month}/finalize")
@endpoint(produces="text/html", tag="console")
async def statement_finalize(request: web.Request) -> web.Response:
    """Finalize a statement (administrators, as in the API), once the box confirming it is ticked."""
    actor, form = await writer_form(request, BANK_ADMINS)
    merchant_id, month = parse_id(request.match_info["merchant_id"]), Month.parse(request.match_info["month"])
    if form.get("confirm") != "1":
        return await _statement(request, errors={"confirm": _text(request, "error.confirm_required")}, status=400)
    try:
        async with connection(request) as conn:
            await settlement.finalize(conn, actor, merchant_id, month, now_of(request), tz_of(request))
    except Conflict as error:
        return await _statement(request, errors={"body": error.message}, status=409)
    return redirect(site_of(request).url(f"/settlement/{merchant_id}/{month}?done=finalized"))


def _text(request: web.Request, key: str) -> str:
    from merchant_portal.i18n import language_of, translator

    return translator(language_of(request))(key)


# Redemptions ---------------------------------------------------------------------------------------------------


def _filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    filters: dict[str, Any] = {"merchant": None, "perk": None, "day": None}
    problems: dict[str, str] = {}
    if query.get("merchant"):
        try:
            filters["merchant"] = UUID(query["merchant"])
        except ValueError:
            problems["merchant"] = "not an allowed value"
    if query.get("perk"):
        filters["perk"] = parse_code(query["perk"])
    if query.get("day"):
        try:
            filters["day"] = date.fromisoformat(query["day"])
        except ValueError:
            problems["day"] = "not an allowed value"
    if problems:
        raise BadRequest(problems)
    return filters


@routes.get("/redemptions")
@endpoint(produces="text/html", tag="console")
async def redemption_list(request: web.Request) -> web.Response:
    """Every partner's redemptions, newest first; filter by merchant, perk and day (bank time)."""
    return await _redemptions(request)


async def _redemptions(request: web.Request, *, failed: str | None = None, errors: dict[str, str] | None = None,
                       status: int = 200) -> web.Response:
    reader(request)
    filters = _filters(request)
    at_from = at_to = None
    if filters["day"] is not None:
        at_from, at_to = date_bounds(filters["day"], tz_of(request))
    async with connection(request) as conn:
        listed = await staff_queries.list_redemptions(
            conn, merchant_id=filters["merchant"], perk=filters["perk"], at_from=at_from, at_to=at_to,
            cursor=request.query.get("cursor"), limit=PAGE_SIZE,
        )
        merchants = await merchant_queries.search_merchants(conn, None, None, None, 500)
        perks = await catalogue.list_perks(conn, None, 500)
    context = {
        "tab": "redemptions", "items": listed["items"], "links": page_links(request, listed["next_cursor"]),
        "merchants": merchants, "merchant_names": {m["id"]: m["name"] for m in merchants}, "perks": perks,
        "filters": {name: "" if value is None else str(value) for name, value in filters.items()},
        "failed": failed, "errors": errors or {}, "notice": notice_of(request),
    }
    return show(request, "console/redemptions.html", context, status=status)


@routes.post("/redemptions/{redemption_id}/void")
@endpoint(produces="text/html", tag="console")
async def redemption_void(request: web.Request) -> web.Response:
    """Void a redemption (operators, administrators) with a reason, once confirmed: quota and capacity come back."""
    actor, form = await writer_form(request, BANK_STAFF_WRITERS)
    redemption_id = parse_id(request.match_info["redemption_id"])
    reason = form.get("reason", "")
    form_id = str(redemption_id)
    try:
        problems: dict[str, str] = {}
        if form.get("confirm") != "1":
            problems["confirm"] = "confirm_required"
        try:
            body = VoidRequest.model_validate({"reason": reason.strip() if isinstance(reason, str) else None})
        except ValueError:
            problems["reason"] = "String should have at least 1 character"
        if problems:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await void(conn, actor, redemption_id, body.reason, now_of(request), as_bank=True)
    except (BadRequest, Conflict, ApiError) as error:
        if error.status not in (400, 409):
            raise
        shown = problems_of(request, error)
        if "confirm" in shown:
            shown["confirm"] = _text(request, "error.confirm_required")
        return await _redemptions(request, failed=form_id, errors=shown, status=error.status)
    back = request.query.get("back", "")
    target = back if back.startswith(site_of(request).url("/redemptions")) else site_of(request).url("/redemptions")
    separator = "&" if "?" in target else "?"
    return redirect(f"{target}{separator}done=voided")
