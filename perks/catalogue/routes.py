"""HTTP: the catalogue — tiers, perks and the entitlements linking them."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from perks.catalogue import service
from perks.catalogue.models import EntitlementPut, PerkCreate, PerkPatch, TierCreate, TierPatch
from perks.core.appkeys import POOL
from perks.core.auth import BANK_STAFF_READERS, BANK_STAFF_WRITERS
from perks.core.endpoint import endpoint, principal_of
from perks.core.ids import parse_code
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, page
from perks.core.fields import cursor_value
from perks.core.schemas import Page

routes = web.RouteTableDef()

# Tiers ----------------------------------------------------------------------------------------------------------


class TierView(BaseModel):
    code: str
    name: str
    rank: int
    min_points: int
    created_at: datetime
    updated_at: datetime


@routes.post("/api/v1/tiers")
@endpoint(roles=BANK_STAFF_WRITERS, body=TierCreate, response=TierView, status=201, errors=("conflict",), tag="catalogue")
async def create_tier(request: web.Request, body: TierCreate) -> web.Response:
    """Create a tier.

    409 `conflict` when the code or the rank is taken (`details.fields` names which)."""
    async with request.config_dict[POOL].acquire() as conn:
        tier = await service.create_tier(conn, principal_of(request), **body.model_dump())
    return json_response(tier, status=201)


@routes.get("/api/v1/tiers")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[TierView], tag="catalogue")
async def list_tiers(request: web.Request, query: PageQuery) -> web.Response:
    """The tiers, from the lowest rank up."""
    after = cursor_value(query.cursor, int)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_tiers(conn, after, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [row["rank"]]))


@routes.get("/api/v1/tiers/{code}")
@endpoint(roles=BANK_STAFF_READERS, response=TierView, errors=("not_found",), tag="catalogue")
async def get_tier(request: web.Request) -> web.Response:
    """One tier."""
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_tier(conn, parse_code(request.match_info["code"])))


@routes.patch("/api/v1/tiers/{code}")
@endpoint(
    roles=BANK_STAFF_WRITERS, body=TierPatch, response=TierView, errors=("not_found", "conflict"), tag="catalogue"
)
async def update_tier(request: web.Request, body: TierPatch) -> web.Response:
    """Change a tier's name, rank or minimum points.

    The code never changes. Fields left out stay as they are. 409 `conflict` when the rank is taken: to swap
    two tiers' ranks, move one to a free rank first."""
    async with request.config_dict[POOL].acquire() as conn:
        tier = await service.update_tier(conn, principal_of(request), parse_code(request.match_info["code"]), **body.changes())
    return json_response(tier)


# Perks ----------------------------------------------------------------------------------------------------------


class PerkView(BaseModel):
    code: str
    name: str
    category: str
    description: str | None
    voucher_ttl_seconds: int
    birthday_only: bool
    created_at: datetime
    updated_at: datetime


@routes.post("/api/v1/perks")
@endpoint(roles=BANK_STAFF_WRITERS, body=PerkCreate, response=PerkView, status=201, errors=("conflict",), tag="catalogue")
async def create_perk(request: web.Request, body: PerkCreate) -> web.Response:
    """Create a perk.

    409 `conflict` when the code is taken."""
    async with request.config_dict[POOL].acquire() as conn:
        perk = await service.create_perk(conn, principal_of(request), **body.model_dump())
    return json_response(perk, status=201)


@routes.get("/api/v1/perks")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[PerkView], tag="catalogue")
async def list_perks(request: web.Request, query: PageQuery) -> web.Response:
    """The perks, in order of their codes."""
    after = cursor_value(query.cursor, str)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_perks(conn, after, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [row["code"]]))


@routes.get("/api/v1/perks/{code}")
@endpoint(roles=BANK_STAFF_READERS, response=PerkView, errors=("not_found",), tag="catalogue")
async def get_perk(request: web.Request) -> web.Response:
    """One perk."""
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_perk(conn, parse_code(request.match_info["code"])))


@routes.patch("/api/v1/perks/{code}")
@endpoint(roles=BANK_STAFF_WRITERS, body=PerkPatch, response=PerkView, errors=("not_found",), tag="catalogue")
async def update_perk(request: web.Request, body: PerkPatch) -> web.Response:
    """Change a perk.

    The code never changes. Fields left out stay as they are; `description` may be set to null. Vouchers already
    issued keep the lifetime they were issued with."""
    async with request.config_dict[POOL].acquire() as conn:
        perk = await service.update_perk(conn, principal_of(request), parse_code(request.match_info["code"]), **body.changes())
    return json_response(perk)


# Entitlements ---------------------------------------------------------------------------------------------------


class EntitlementView(BaseModel):
    tier: str
    perk: str
    yearly_quota: int | None
    monthly_cap: int | None
    required_tag: str | None = Field(description="Only clients with this tag are entitled; null: every client "
                                     "of the tier.")
    updated_at: datetime


@routes.put("/api/v1/tiers/{tier}/entitlements/{perk}")
@endpoint(roles=BANK_STAFF_WRITERS, body=EntitlementPut, response=EntitlementView, errors=("not_found",), tag="catalogue")
async def put_entitlement(request: web.Request, body: EntitlementPut) -> web.Response:
    """Grant a perk to a tier, or replace the grant.

    Both `yearly_quota` and `monthly_cap` must be sent (null is a deliberate "unlimited", never a default).
    With `required_tag`, a client of the tier without that tag is `not_entitled`. Clients of the tier see the
    change at once; uses already counted this year and month stay counted."""
    tier, perk = parse_code(request.match_info["tier"]), parse_code(request.match_info["perk"])
    async with request.config_dict[POOL].acquire() as conn:
        entitlement = await service.put_entitlement(conn, principal_of(request), tier, perk, **body.model_dump())
    return json_response(entitlement)


@routes.delete("/api/v1/tiers/{tier}/entitlements/{perk}")
@endpoint(roles=BANK_STAFF_WRITERS, status=204, errors=("not_found",), tag="catalogue")
async def delete_entitlement(request: web.Request) -> web.Response:
    """Withdraw a perk from a tier.

    404 when the tier had no entitlement to that perk."""
    tier, perk = parse_code(request.match_info["tier"]), parse_code(request.match_info["perk"])
    async with request.config_dict[POOL].acquire() as conn:
        await service.delete_entitlement(conn, principal_of(request), tier, perk)
    return web.Response(status=204)


@routes.get("/api/v1/tiers/{tier}/entitlements")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[EntitlementView], errors=("not_found",), tag="catalogue")
async def list_entitlements(request: web.Request, query: PageQuery) -> web.Response:
    """The perks a tier grants, in order of perk code."""
    after = cursor_value(query.cursor, str)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_entitlements(conn, parse_code(request.match_info["tier"]), after, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [row["perk"]]))
