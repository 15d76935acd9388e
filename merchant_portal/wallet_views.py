"""The client's wallet (/wallet): opened through a one-time link, it lists the client's perks and shows a
perk's voucher as a QR code full screen, fetching a fresh one before the shown one expires."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from merchant_portal import security
from merchant_portal.pages import checked_form, current_principal, explain, form_text, redirect, render, site_of
from perks import quotas
from perks.accounts import sessions
from perks.clients import wallet_links
from perks.core.appkeys import CLOCK, CONFIG, METRICS, POOL
from perks.core.auth import Principal
from perks.core.endpoint import endpoint
from perks.core.errors import NotFound
from perks.core.jsonutil import json_response
from perks.core.validation import Body
from perks.vouchers import qr
from perks.vouchers import service as vouchers
from perks.vouchers.appkeys import KEYRING, QR_POOL

routes = web.RouteTableDef()

PERK_CODE = re.compile(r"^[a-z0-9_]{1,32}$")


@routes.get("")
@routes.get("/")
@endpoint(produces="text/html", tag="wallet")
async def wallet_home(request: web.Request) -> web.Response:
    """The client's perks with what remains of each this year."""
    client = current_principal(request)
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    at = quotas.period(now, config.timezone)
    async with request.config_dict[POOL].acquire() as conn:
        profile = await vouchers.client_profile(conn, UUID(client.id))
        granted = await quotas.entitlements(conn, UUID(client.id), at)
    return render(request, "wallet/index.html", {"profile": profile, "perks": granted, "year": at.year})


def unavailable_reason(entitlement: quotas.Entitlement | None) -> str | None:
    """Why no voucher can be shown now: the quota decision's refusal (the one issuing would give)."""
    if entitlement is None or not (entitlement.entitled or entitlement.grants):
        return "not_entitled"
    return entitlement.refusal


@routes.get("/perks/{perk}")
@endpoint(produces="text/html", tag="wallet")
async def perk_page(request: web.Request) -> web.Response:
    """One perk's voucher, full screen: its QR code, the perk's name, a countdown; renewed before it expires."""
    client = current_principal(request)
    code = request.match_info["perk"]
    if not PERK_CODE.match(code):
        raise NotFound()
    now = request.config_dict[CLOCK].now()
    at = quotas.period(now, request.config_dict[CONFIG].timezone)
    async with request.config_dict[POOL].acquire() as conn:
        decided = await quotas.decision(conn, UUID(client.id), code, at)
    reason = unavailable_reason(decided)
    granted = decided if reason != "not_entitled" else None
    context = {
        "perk": granted,
        "code": code,
        "unavailable": explain(request, reason) if reason else None,
        "unavailable_code": reason,
    }
    return render(request, "wallet/perk.html", context)


class VoucherRequest(Body):
    perk: str = Field(pattern=r"^[a-z0-9_]{1,32}$")


class WalletVoucher(BaseModel):
    id: str
    perk: str
    expires_at: datetime
    seconds_left: int
    qr_png: str = Field(description="The QR code as a data: URL of a PNG image.")


@routes.post("/api/vouchers")
@endpoint(
    body=VoucherRequest,
    response=WalletVoucher,
    status=201,
    errors=("unauthorized", "forbidden", "client_blocked", "not_entitled", "quota_exhausted", "monthly_cap_reached"),
    tag="wallet",
    headers={security.CSRF_HEADER: "the page's CSRF token (the wallet's cookie session is the credential)"},
)
async def wallet_voucher(request: web.Request, body: VoucherRequest) -> web.Response:
    """A fresh voucher for the wallet page (superseding the one shown before), with its QR code.

    Cookie session of the wallet; refusals carry a message in the page's language."""
    client = current_principal(request)
    security.check_csrf(request, request.cookies.get(site_of(request).cookie), request.headers.get(security.CSRF_HEADER))
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        voucher = await vouchers.issue_voucher(
            conn, request.config_dict[KEYRING], UUID(client.id), body.perk, now, config.timezone
        )
    request.config_dict[METRICS].vouchers_issued.labels(body.perk).inc()
    png = await request.config_dict[QR_POOL].render(qr.render_png, voucher["token"])
    expires_at: datetime = voucher["expires_at"]
    payload: dict[str, Any] = {
        "id": voucher["id"],
        "perk": voucher["perk"],
        "expires_at": expires_at,
        "seconds_left": max(int((expires_at - now).total_seconds()), 0),
        "qr_png": "data:image/png;base64," + base64.b64encode(png).decode(),
    }
    return json_response(payload, status=201)


@routes.get("/open")
@endpoint(produces="text/html", tag="wallet")
async def open_page(request: web.Request) -> web.Response:
    """Where a one-time wallet link lands: the page posts the link's secret (kept in the URL's fragment, so
    that it appears in no log) to spend it; link previews, which do not run the page, cannot spend it."""
    return render(request, "wallet/open.html")


def _link_error(request: web.Request) -> dict[str, str]:
    return {"code": "link_invalid", "message": explain(request, "link_invalid")}


@routes.post("/open")
@endpoint(produces="text/html", tag="wallet")
async def open_submit(request: web.Request) -> web.Response:
    """Spend a one-time link: the browser gets the client's wallet session and goes to the wallet."""
    form = await checked_form(request)
    token = form_text(form, "t", 128)
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        opened = await wallet_links.spend(conn, token, now)
    if opened is None:
        return render(request, "error.html", _link_error(request), status=410)
    client_id, generation = opened
    ttl = request.config_dict[CONFIG].client_session_ttl_seconds
    principal = Principal(id=str(client_id), role="client", session_generation=generation)
    session = security.issue_session(request, principal, ttl)
    site = site_of(request)
    response = redirect(site.url("/"))
    security.set_cookie(request, response, site.cookie, session, site.prefix, ttl)
    security.end_pre_session(response)
    return response


@routes.post("/logout")
@endpoint(produces="text/html", tag="wallet")
async def wallet_logout(request: web.Request) -> web.Response:
    """Close the wallet: the client's sessions end on the server (every device's, the bank app's too: the session
    generation is bumped), so that a copied cookie stops working as well."""
    client = current_principal(request)
    await checked_form(request)
    async with request.config_dict[POOL].acquire() as conn:
        await sessions.log_out(conn, client, request.config_dict[CLOCK].now())
    site = site_of(request)
    response = render(request, "wallet/closed.html", {"principal": None})
    security.clear_cookie(response, site.cookie, site.prefix)
    return response
