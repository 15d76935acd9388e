"""Console pages: partners — the list with search and status, a merchant's stores, users and agreements, and
the changes bank staff make to them (agreement terms, a new perk, suspend/reactivate, a store, a user)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from merchant_portal.console.common import (
    PAGE_SIZE, connection, notice_of, page_links, problems_of, read_form, reader, show, this_year, writer_form,
)
from merchant_portal.pages import redirect, site_of
from perks.accounts import service as accounts
from perks.accounts.models import MerchantUserCreate
from perks.catalogue import service as catalogue
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError, BadRequest, Conflict
from perks.core.ids import parse_code, parse_id
from perks.core.pagination import decode_cursor, page, time_id_key
from perks.merchants import queries, service
from perks.merchants.models import AgreementPut, MerchantCreate, StoreCreate

routes = web.RouteTableDef()
STATUSES = ("active", "suspended")
FORM_ERRORS = (BadRequest, Conflict)


def _merchant_id(request: web.Request) -> UUID:
    return parse_id(request.match_info["merchant_id"])


def _back(request: web.Request, merchant_id: UUID, notice: str) -> web.Response:
    return redirect(site_of(request).url(f"/partners/{merchant_id}?done={notice}"))


@routes.get("/partners")
@endpoint(produces="text/html", tag="console")
async def partner_list(request: web.Request) -> web.Response:
    """The partner merchants: search by name, category or city; filter by status."""
    return await _list(request)


async def _list(request: web.Request, **form: Any) -> web.Response:
    reader(request)
    text = request.query.get("q", "").strip()[:100]
    status = request.query.get("status")
    status = status if status in STATUSES else None
    async with connection(request) as conn:
        rows = await queries.search_merchants(conn, text, status, decode_cursor(request.query.get("cursor"), 2),
                                              PAGE_SIZE + 1)
    listed = page(rows, PAGE_SIZE, time_id_key)
    context = {"tab": "partners", "q": text, "status": status, "statuses": STATUSES, "merchants": listed["items"],
               "links": page_links(request, listed["next_cursor"]), "errors": {}, "values": {}} | form
    return show(request, "console/partners.html", context)


@routes.post("/partners")
@endpoint(produces="text/html", tag="console")
async def partner_create(request: web.Request) -> web.Response:
    """Register a partner merchant (active from the start)."""
    actor, form = await writer_form(request)
    body, values, problems = read_form(form, MerchantCreate, {"name": "text", "category": "text", "city": "text?",
                                                              "contact_phone": "text?"})
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            merchant = await service.create_merchant(conn, actor, **body.model_dump())
    except FORM_ERRORS as error:
        response = await _list(request, errors=problems_of(request, error), values=values)
        response.set_status(error.status)
        return response
    return _back(request, UUID(merchant["id"]), "created")


@routes.get("/partners/{merchant_id}")
@endpoint(produces="text/html", tag="console")
async def partner_page(request: web.Request) -> web.Response:
    """A merchant: its details, stores, users and agreements (capacity, used, remaining, unit price)."""
    return await _show(request)


async def _show(request: web.Request, *, failed: str | None = None, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    reader(request)
    merchant_id = _merchant_id(request)
    async with connection(request) as conn:
        merchant = await service.get_merchant(conn, merchant_id)
        stores = await service.list_stores(conn, merchant_id, None, 200)
        users = [accounts.user_view(row) for row in await accounts.list_merchant_users(conn, merchant_id, None, 200)]
        usage = await service.merchant_usage(conn, merchant_id, this_year(request))
        perks = await catalogue.list_perks(conn, None, 500)
    agreed = {item["perk"] for item in usage["items"]}
    context = {
        "tab": "partners", "merchant": merchant, "stores": stores, "users": users, "usage": usage,
        "perk_names": {perk["code"]: perk["name"] for perk in perks},
        "unagreed": [perk for perk in perks if perk["code"] not in agreed],
        "store_names": {store["id"]: store["name"] for store in stores},
        "failed": failed, "errors": errors or {}, "values": values or {},
        "notice": notice_of(request),
    }
    return show(request, "console/partner.html", context, status=status)


async def _failed(request: web.Request, form_id: str, error: ApiError, values: dict[str, Any]) -> web.Response:
    return await _show(request, failed=form_id, errors=problems_of(request, error), values=values,
                       status=error.status)


@routes.post("/partners/{merchant_id}/status")
@endpoint(produces="text/html", tag="console")
async def partner_status(request: web.Request) -> web.Response:
    """Suspend a merchant (its redemptions are refused) or reactivate it."""
    actor, form = await writer_form(request)
    merchant_id = _merchant_id(request)
    wanted = form.get("status")
    if wanted not in STATUSES:
        return await _failed(request, "status", BadRequest({"status": "Input should be 'active' or 'suspended'"}), {})
    async with connection(request) as conn:
        await service.update_merchant(conn, actor, merchant_id, {"status": wanted})
    return _back(request, merchant_id, "suspended" if wanted == "suspended" else "reactivated")


@routes.post("/partners/{merchant_id}/agreements")
@endpoint(produces="text/html", tag="console")
async def agreement_put(request: web.Request) -> web.Response:
    """Set an agreement's yearly capacity (blank: no cap) and unit price: a new perk for the partner, or new terms."""
    actor, form = await writer_form(request)
    merchant_id = _merchant_id(request)
    perk = form.get("perk", "")
    form_id = f"agreement:{perk}" if form.get("existing") else "agreement:new"
    body, values, problems = read_form(form, AgreementPut, {"yearly_capacity": "int?", "unit_price_fen": "int"})
    try:
        code = parse_code(perk) if isinstance(perk, str) and perk else None
        if code is None:
            problems["perk"] = "Field required"
        if body is None or problems:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await service.put_agreement(conn, actor, merchant_id, code, yearly_capacity=body.yearly_capacity,
                                        unit_price_fen=body.unit_price_fen)
    except FORM_ERRORS as error:
        return await _failed(request, form_id, error, values)
    return _back(request, merchant_id, "agreement")


@routes.post("/partners/{merchant_id}/stores")
@endpoint(produces="text/html", tag="console")
async def store_create(request: web.Request) -> web.Response:
    """Add a store to a merchant."""
    actor, form = await writer_form(request)
    merchant_id = _merchant_id(request)
    body, values, problems = read_form(form, StoreCreate, {"name": "text", "address": "text?"})
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await service.create_store(conn, actor, merchant_id, **body.model_dump())
    except FORM_ERRORS as error:
        return await _failed(request, "store", error, values)
    return _back(request, merchant_id, "store")


@routes.post("/partners/{merchant_id}/users")
@endpoint(produces="text/html", tag="console")
async def user_create(request: web.Request) -> web.Response:
    """Add a manager, or a cashier of one of the merchant's stores."""
    actor, form = await writer_form(request)
    merchant_id = _merchant_id(request)
    kinds = {"username": "text", "password": "text", "role": "text", "store_id": "text?"}
    body, values, problems = read_form(form, MerchantUserCreate, kinds)
    values.pop("password", None)
    try:
        if body is None:
            raise BadRequest(problems)
        async with connection(request) as conn:
            await accounts.create_merchant_user(conn, actor, merchant_id, username=body.username,
                                                password=body.password, role=body.role, store_id=body.store_id)
    except FORM_ERRORS as error:
        return await _failed(request, "user", error, values)
    return _back(request, merchant_id, "user")
