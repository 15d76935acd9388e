"""HTTP: a client's own profile, entitlements, vouchers and their QR images; the public JWKS."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Callable
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, METRICS, POOL
from perks.core.auth import CLIENTS
from perks.core.endpoint import endpoint, principal_of
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.validation import Body, Query
from perks.points.events import client_points
from perks.vouchers import qr, service
from perks.vouchers.appkeys import KEYRING, QR_POOL
from perks.vouchers.keys import JWKS_MAX_AGE_SECONDS

routes = web.RouteTableDef()

NO_STORE = {"Cache-Control": "no-store"}
# Shorter than a rotation's pre-publication lead (see perks.vouchers.keys): a verifier that honours it has every
# new key before the first voucher signed with it exists.
JWKS_CACHE = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}
ISSUE_REFUSALS = ("client_blocked", "not_entitled", "quota_exhausted", "monthly_cap_reached")


class Me(BaseModel):
    id: str
    display_name: str = Field(description="The client's name, masked: first and last character kept, the rest `*`.")
    tier: str | None
    points: int = Field(description="Points earned in the trailing twelve months.")


def _client_id(request: web.Request) -> UUID:
    return parse_id(principal_of(request).id)


@routes.get("/api/v1/me")
@endpoint(roles=CLIENTS, response=Me, errors=("not_found",), tag="client")
async def me(request: web.Request) -> web.Response:
    """The calling client: id, masked name, tier and points (earned in the trailing twelve months)."""
    client_id = _client_id(request)
    now, tz = request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone
    async with request.config_dict[POOL].acquire() as conn:
        profile = await service.client_profile(conn, client_id)
        earned = await client_points(conn, client_id, now, tz)
    return json_response(profile | {"points": earned["points"]})


class EntitlementsQuery(Query):
    year: int | None = Field(None, ge=1000, le=9999, description="A quota year (default: the current one).")


class GrantLeft(BaseModel):
    id: str
    remaining: int = Field(ge=1, description="Uses of the grant left.")
    expires_on: date = Field(description="Usable until the end of this day, in the bank's time zone.")


class EntitlementView(BaseModel):
    perk: str
    name: str
    yearly_quota: int | None = Field(description="Uses a year; null: unlimited; 0 for a perk held through grants only.")
    used: int
    remaining: int | None = Field(description="Uses left this year (never below 0); null: unlimited.")
    monthly_cap: int | None
    used_this_month: int = Field(description="Use in the current quota month; 0 for any year but the current one.")
    birthday_only: bool = Field(description="Usable only in the client's birthday month (bank time zone).")
    available_from: date | None = Field(
        description="For a birthday perk: the first day of the birthday month under way or next to come "
        "(usable until that month ends); null otherwise, or when the bank has no birthday for the client."
    )
    grants: list[GrantLeft] = Field(
        description="Active, unexpired grants for the perk with uses left, soonest expiring first (the order "
        "redeeming draws on them, once the tier's quota or monthly cap is used up); [] when none."
    )


class Entitlements(BaseModel):
    year: int
    items: list[EntitlementView]


@routes.get("/api/v1/me/entitlements")
@endpoint(roles=CLIENTS, query=EntitlementsQuery, response=Entitlements, errors=("not_found",), tag="client")
async def my_entitlements(request: web.Request, query: EntitlementsQuery) -> web.Response:
    """The perks the client holds now, through its tier or through grants, with use in a quota year.

    A tier's entitlement that requires a tag is listed only when the client has that tag. A perk the client holds
    only through grants is listed too (`yearly_quota` and `remaining` 0).

    Quota years and months are calendar years and months in the bank's time zone. A tier change takes effect at
    once: `remaining` is the new tier's quota less this year's use, never below 0. `used_this_month` counts use in
    the current quota month, so for any other year it is 0."""
    now = request.config_dict[CLOCK].now()
    tz = request.config_dict[CONFIG].timezone
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.client_entitlements(conn, _client_id(request), query.year, now, tz)
    return json_response(view)


class VoucherRequest(Body):
    perk: str = Field(pattern=r"^[a-z0-9_]{1,32}$", description="A perk's code.")


class VoucherIssued(BaseModel):
    id: str
    perk: str
    token: str = Field(description="A compact EdDSA JWS of at most 213 characters; show it as a QR code.")
    expires_at: datetime
    qr_png_url: str
    qr_svg_url: str


@routes.post("/api/v1/me/vouchers")
@endpoint(roles=CLIENTS, body=VoucherRequest, response=VoucherIssued, status=201, errors=ISSUE_REFUSALS, tag="client")
async def issue_voucher(request: web.Request, body: VoucherRequest) -> web.Response:
    """Take a voucher for a perk, to show at a merchant; it supersedes the client's previous one for that perk.

    An unknown perk, like one the client's tier does not grant, is 409 `not_entitled`."""
    now = request.config_dict[CLOCK].now()
    tz = request.config_dict[CONFIG].timezone
    async with request.config_dict[POOL].acquire() as conn:
        voucher = await service.issue_voucher(
            conn, request.config_dict[KEYRING], _client_id(request), body.perk, now, tz
        )
    request.config_dict[METRICS].vouchers_issued.labels(body.perk).inc()
    return json_response(voucher, status=201, headers=NO_STORE)


async def _qr_image(request: web.Request, render: Callable[[str], Any]) -> Any:
    async with request.config_dict[POOL].acquire() as conn:
        voucher = await service.voucher_of_client(conn, _client_id(request), request.match_info["voucher_id"])
    return await request.config_dict[QR_POOL].render(render, voucher["token"])


@routes.get("/api/v1/me/vouchers/{voucher_id}/qr.png")
@endpoint(roles=CLIENTS, produces="image/png", errors=("not_found",), tag="client")
async def voucher_qr_png(request: web.Request) -> web.Response:
    """The QR code of one of the client's vouchers, as a PNG (never cached)."""
    png = await _qr_image(request, qr.render_png)
    return web.Response(body=png, content_type="image/png", headers=NO_STORE)


@routes.get("/api/v1/me/vouchers/{voucher_id}/qr.svg")
@endpoint(roles=CLIENTS, produces="image/svg+xml", errors=("not_found",), tag="client")
async def voucher_qr_svg(request: web.Request) -> web.Response:
    """The QR code of one of the client's vouchers, as an SVG (never cached)."""
    svg = await _qr_image(request, qr.render_svg)
    return web.Response(text=svg, content_type="image/svg+xml", headers=NO_STORE)


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]


@routes.get("/.well-known/jwks.json")
@endpoint(response=Jwks, errors=("database_unavailable",), tag="vouchers")
async def jwks(request: web.Request) -> web.Response:
    """The public keys of every signing key whose vouchers may still be live, to check vouchers offline."""
    return json_response(request.config_dict[KEYRING].jwks(), headers=JWKS_CACHE)
