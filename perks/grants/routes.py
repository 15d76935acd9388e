"""HTTP: grants given to a client (bank staff)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field

from perks.core.appkeys import CLOCK, POOL
from perks.core.auth import BANK_STAFF_READERS, BANK_STAFF_WRITERS
from perks.core.endpoint import endpoint, principal_of
from perks.core.fields import Code, multi_line
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.today import bank_today
from perks.core.validation import Body
from perks.grants import service

routes = web.RouteTableDef()

Reason = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(multi_line)]


class GrantCreate(Body):
    perk: Code
    quantity: int = Field(ge=1, le=1_000_000, description="Uses given, beyond the tier's quota.")
    expires_on: date = Field(description="`YYYY-MM-DD`, today or later in the bank's time zone; usable until the "
                             "end of that day there.")
    reason: Reason


class GrantRevoke(Body):
    reason: Reason


class GrantView(BaseModel):
    id: str
    client_id: str
    perk: str
    quantity: int
    used: int
    remaining: int = Field(description="`quantity - used`.")
    expires_on: date
    reason: str
    status: Literal["active", "revoked"]
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


@routes.post("/api/v1/clients/{client_id}/grants")
@endpoint(roles=BANK_STAFF_WRITERS, body=GrantCreate, response=GrantView, status=201, errors=("not_found",), tag="grants")
async def create_grant(request: web.Request, body: GrantCreate) -> web.Response:
    """Give a client extra uses of a perk until a date.

    Redeeming draws on the tier's quota first, then on the client's soonest-expiring grant for that perk. Written
    with its audit entry and a `grant.created` event. 400 naming `perk` for an unknown perk, `expires_on` for a past
    date; 404 for an unknown client."""
    client_id = parse_id(request.match_info["client_id"])
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.create_grant(
            conn, principal_of(request), client_id, **body.model_dump(),
            now=request.config_dict[CLOCK].now(), today=bank_today(request),
        )
    return json_response(view, status=201)


@routes.get("/api/v1/clients/{client_id}/grants")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[GrantView], errors=("not_found",), tag="grants")
async def list_grants(request: web.Request, query: PageQuery) -> web.Response:
    """A client's grants, oldest first (revoked and expired ones too)."""
    client_id = parse_id(request.match_info["client_id"])
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_grants(conn, client_id, after=after, limit=query.limit + 1)
    return json_response(page(rows, query.limit, time_id_key))


@routes.post("/api/v1/grants/{grant_id}/revoke")
@endpoint(roles=BANK_STAFF_WRITERS, body=GrantRevoke, response=GrantView, errors=("not_found", "conflict"), tag="grants")
async def revoke_grant(request: web.Request, body: GrantRevoke) -> web.Response:
    """Revoke a grant: its remaining uses can no longer be redeemed.

    409 `conflict` when it is already revoked."""
    grant_id = parse_id(request.match_info["grant_id"])
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.revoke_grant(conn, principal_of(request), grant_id, reason=body.reason,
                                          now=request.config_dict[CLOCK].now())
    return json_response(view)
