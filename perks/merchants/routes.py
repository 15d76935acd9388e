"""HTTP: merchants, their stores, partner agreements and yearly usage (the bank's view and the merchant's own)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import (
    BANK_STAFF_AND_MANAGERS, BANK_STAFF_READERS, BANK_STAFF_WRITERS, MERCHANT_ROLES, ensure_merchant_scope,
)
from perks.core.endpoint import endpoint, principal_of
from perks.core.errors import BadRequest
from perks.core.ids import parse_code, parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.validation import Query
from perks.merchants import service
from perks.merchants.models import AgreementPut, MerchantCreate, MerchantUpdate, Status, StoreCreate, StoreUpdate
from perks.quotas import quota_period

routes = web.RouteTableDef()


def _merchant_id(request: web.Request) -> UUID:
    """The merchant named in the path, within the caller's reach (another merchant's is 404)."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    ensure_merchant_scope(principal_of(request), merchant_id)
    return merchant_id


def _changes(body: BaseModel) -> dict[str, object]:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for name in ("name", "category", "status"):
        if name in changes and changes[name] is None:
            raise BadRequest({name: "may not be null"})
    return changes


class MerchantView(BaseModel):
    id: str
    name: str
    category: str
    city: str | None
    contact_phone: str | None
    status: Status
    created_at: datetime
    updated_at: datetime


class MerchantListQuery(PageQuery):
    status: Status | None = None


@routes.post("/api/v1/merchants")
@endpoint(roles=BANK_STAFF_WRITERS, body=MerchantCreate, response=MerchantView, status=201, tag="merchants")
async def create_merchant(request: web.Request, body: MerchantCreate) -> web.Response:
    """Register a partner merchant (active from the start)."""
    async with request.config_dict[POOL].acquire() as conn:
        merchant = await service.create_merchant(conn, principal_of(request), **body.model_dump())
    return json_response(merchant, status=201)


@routes.get("/api/v1/merchants")
@endpoint(roles=BANK_STAFF_READERS, query=MerchantListQuery, response=Page[MerchantView], tag="merchants")
async def list_merchants(request: web.Request, query: MerchantListQuery) -> web.Response:
    """The partner merchants, oldest first; `?status=` keeps only those of one status."""
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_merchants(conn, query.status, after, query.limit + 1)
    return json_response(page(rows, query.limit, time_id_key))


@routes.get("/api/v1/merchants/{merchant_id}")
@endpoint(roles=BANK_STAFF_AND_MANAGERS, response=MerchantView, errors=("not_found",), tag="merchants")
async def get_merchant(request: web.Request) -> web.Response:
    """One merchant; a manager sees only its own."""
    merchant_id = _merchant_id(request)
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_merchant(conn, merchant_id))


@routes.patch("/api/v1/merchants/{merchant_id}")
@endpoint(roles=BANK_STAFF_WRITERS, body=MerchantUpdate, response=MerchantView, errors=("not_found",), tag="merchants")
async def update_merchant(request: web.Request, body: MerchantUpdate) -> web.Response:
    """Change a merchant's details, or suspend or reactivate it."""
    merchant_id = _merchant_id(request)
    async with request.config_dict[POOL].acquire() as conn:
        merchant = await service.update_merchant(conn, principal_of(request), merchant_id, _changes(body))
    return json_response(merchant)


class StoreView(BaseModel):
    id: str
    merchant_id: str
    name: str
    address: str | None
    created_at: datetime
    updated_at: datetime


@routes.post("/api/v1/merchants/{merchant_id}/stores")
@endpoint(roles=BANK_STAFF_WRITERS, body=StoreCreate, response=StoreView, status=201, errors=("not_found",), tag="merchants")
async def create_store(request: web.Request, body: StoreCreate) -> web.Response:
    """Add a store to a merchant."""
    merchant_id = _merchant_id(request)
    async with request.config_dict[POOL].acquire() as conn:
        store = await service.create_store(conn, principal_of(request), merchant_id, **body.model_dump())
    return json_response(store, status=201)


@routes.get("/api/v1/merchants/{merchant_id}/stores")
@endpoint(roles=BANK_STAFF_AND_MANAGERS, query=PageQuery, response=Page[StoreView], errors=("not_found",), tag="merchants")
async def list_stores(request: web.Request, query: PageQuery) -> web.Response:
    """The stores of a merchant, oldest first; a manager sees only its own merchant's."""
    merchant_id = _merchant_id(request)
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_stores(conn, merchant_id, after, query.limit + 1)
    return json_response(page(rows, query.limit, time_id_key))


@routes.patch("/api/v1/merchants/{merchant_id}/stores/{store_id}")
@endpoint(roles=BANK_STAFF_WRITERS, body=StoreUpdate, response=StoreView, errors=("not_found",), tag="merchants")
async def update_store(request: web.Request, body: StoreUpdate) -> web.Response:
    """Rename a store or change its address."""
    merchant_id = _merchant_id(request)
    store_id = parse_id(request.match_info["store_id"])
    async with request.config_dict[POOL].acquire() as conn:
        store = await service.update_store(conn, principal_of(request), merchant_id, store_id, _changes(body))
    return json_response(store)


class AgreementView(BaseModel):
    merchant_id: str
    perk: str
    yearly_capacity: int | None
    unit_price_fen: int
    created_at: datetime
    updated_at: datetime


@routes.put("/api/v1/merchants/{merchant_id}/perks/{perk}")
@endpoint(roles=BANK_STAFF_WRITERS, body=AgreementPut, response=AgreementView, errors=("not_found",), tag="merchants")
async def put_agreement(request: web.Request, body: AgreementPut) -> web.Response:
    """Set the partner agreement under which a merchant honours a perk (created or replaced)."""
    merchant_id = _merchant_id(request)
    async with request.config_dict[POOL].acquire() as conn:
        agreement = await service.put_agreement(
            conn,
            principal_of(request),
            merchant_id,
            parse_code(request.match_info["perk"]),
            yearly_capacity=body.yearly_capacity,
            unit_price_fen=body.unit_price_fen,
        )
    return json_response(agreement)


@routes.get("/api/v1/merchants/{merchant_id}/perks")
@endpoint(roles=BANK_STAFF_AND_MANAGERS, query=PageQuery, response=Page[AgreementView], errors=("not_found",), tag="merchants")
async def list_agreements(request: web.Request, query: PageQuery) -> web.Response:
    """The perks a merchant honours and on what terms, by perk code."""
    merchant_id = _merchant_id(request)
    after = decode_cursor(query.cursor, 1)
    if after is not None and not (isinstance(after[0], str) and service.PERK_CODE.fullmatch(after[0])):
        raise BadRequest({"cursor": "not a valid cursor"})
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_agreements(conn, merchant_id, after[0] if after else None, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [row["perk"]]))


class UsageQuery(Query):
    year: int | None = Field(None, ge=2000, le=9999, description="default: the current quota year")


class UsageItem(BaseModel):
    perk: str
    yearly_capacity: int | None
    used: int
    remaining: int | None
    unit_price_fen: int


class UsageView(BaseModel):
    year: int
    items: list[UsageItem]


def current_quota_year(request: web.Request) -> int:
    """The quota year now, in the bank's time zone."""
    year, _ = quota_period(request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone)
    return year


@routes.get("/api/v1/merchants/{merchant_id}/usage")
@endpoint(roles=BANK_STAFF_AND_MANAGERS, query=UsageQuery, response=UsageView, errors=("not_found",), tag="merchants")
async def merchant_usage(request: web.Request, query: UsageQuery) -> web.Response:
    """A merchant's use of its yearly capacity for each perk it honours (`remaining` is null without a cap)."""
    merchant_id = _merchant_id(request)
    async with request.config_dict[POOL].acquire() as conn:
        await service.get_merchant(conn, merchant_id)
        return json_response(await service.merchant_usage(conn, merchant_id, _usage_year(request, query)))


@routes.get("/api/v1/merchant/usage")
@endpoint(roles=MERCHANT_ROLES, query=UsageQuery, response=UsageView, tag="redeeming")
async def own_usage(request: web.Request, query: UsageQuery) -> web.Response:
    """The merchant's use of its yearly capacity for each perk it honours (`remaining` is null without a cap)."""
    merchant_id = UUID(principal_of(request).merchant_id)
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.merchant_usage(conn, merchant_id, _usage_year(request, query)))


def _usage_year(request: web.Request, query: UsageQuery) -> int:
    return query.year if query.year is not None else current_quota_year(request)
