"""Console pages: clients — search, a client's page (tier, points, entitlements with use, redemptions, tier
history), a tier override until a date, block / unblock, a one-time wallet link.

An auditor sees a client's name and phone masked (``罗*升``, ``*******1234``): auditing checks what was done to
which record, identified by its id and external reference, and never needs to reach the person; the bank's
operators and administrators, who serve clients and confirm who they are, see the full name."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from merchant_portal.console.common import (
    PAGE_SIZE, connection, notice_of, now_of, page_links, problems_of, reader, show, tz_of, writer_form,
)
from merchant_portal.pages import redirect, site_of
from perks.catalogue import service as catalogue
from perks.clients import search
from perks.clients import service as clients
from perks.clients import tiers as client_tiers
from perks.clients import wallet_links
from perks.core.appkeys import CONFIG
from perks.core.auth import UNMASKED_CLIENT_VIEWERS, Principal
from perks.core.clock import date_bounds
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError, BadRequest, Conflict
from perks.core.ids import parse_id
from perks.core.pagination import decode_cursor, page, time_id_key
from perks.points import events
from perks.privacy import mask_name, mask_phone
from perks.redemption.queries import list_client_redemptions
from perks.vouchers.service import client_entitlements

routes = web.RouteTableDef()


def shown(actor: Principal, client: dict[str, Any]) -> dict[str, Any]:
    """The client as ``actor`` may see it: masked for an auditor."""
    if actor.role in UNMASKED_CLIENT_VIEWERS:
        return client | {"masked": False}
    return client | {"name": mask_name(client["name"]), "phone": mask_phone(client["phone"]), "masked": True}


@routes.get("/clients")
@endpoint(produces="text/html", tag="console")
async def client_list(request: web.Request) -> web.Response:
    """Clients: search by external reference, the last digits of the phone, or a part of the name."""
    actor = reader(request)
    text = request.query.get("q", "").strip()[:64]
    after = decode_cursor(request.query.get("cursor"), 2)
    async with connection(request) as conn:
        if text:
            rows = await search.search_clients(conn, text, after, PAGE_SIZE + 1)
        else:
            rows = await clients.list_clients(conn, after=after, limit=PAGE_SIZE + 1)
    listed = page(rows, PAGE_SIZE, time_id_key)
    context = {"tab": "clients", "q": text, "clients": [shown(actor, row) for row in listed["items"]],
               "links": page_links(request, listed["next_cursor"])}
    return show(request, "console/clients.html", context)


@routes.get("/clients/{client_id}")
@endpoint(produces="text/html", tag="console")
async def client_page(request: web.Request) -> web.Response:
    """One client: tier, points, entitlements with use, redemptions, tier history, and the actions on it."""
    return await _show(request)


async def _show(request: web.Request, *, failed: str | None = None, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None, status: int = 200, link: dict[str, Any] | None = None
                ) -> web.Response:
    actor = reader(request)
    client_id = parse_id(request.match_info["client_id"])
    now, tz = now_of(request), tz_of(request)
    async with connection(request) as conn:
        client = await clients.get_client(conn, client_id)
        points = await events.client_points(conn, client_id, now, tz)
        granted = await client_entitlements(conn, client_id, None, now, tz)
        redemptions = await list_client_redemptions(conn, client_id, cursor=request.query.get("cursor"),
                                                    limit=PAGE_SIZE)
        history = await client_tiers.tier_history(conn, client_id, None, 50)
        tiers = await catalogue.list_tiers(conn, None, 1000)
    context = {
        "tab": "clients", "client": shown(actor, client), "points": points, "entitlements": granted,
        "redemptions": redemptions["items"], "links": page_links(request, redemptions["next_cursor"]),
        "history": history, "tiers": tiers, "failed": failed, "errors": errors or {}, "values": values or {},
        "link": link, "notice": notice_of(request),
        "today": now.astimezone(tz).date().isoformat(),
    }
    return show(request, "console/client.html", context, status=status)


def _back(request: web.Request, client_id: UUID, done: str) -> web.Response:
    return redirect(site_of(request).url(f"/clients/{client_id}?done={done}"))


async def _failed(request: web.Request, form_id: str, error: ApiError, values: dict[str, Any]) -> web.Response:
    return await _show(request, failed=form_id, errors=problems_of(request, error), values=values,
                       status=error.status)


def end_of_day(day: date, tz: Any) -> datetime:
    """The first instant after ``day`` in the bank's time zone: an override "until a date" holds through it."""
    return date_bounds(day, tz)[1]


@routes.post("/clients/{client_id}/override")
@endpoint(produces="text/html", tag="console")
async def tier_override(request: web.Request) -> web.Response:
    """Hold a tier (or no tier) against tier evaluation through a date; or, with ``lift``, end a hold."""
    actor, form = await writer_form(request)
    client_id = parse_id(request.match_info["client_id"])
    values = {"tier": form.get("tier", ""), "until": form.get("until", "")}
    try:
        async with connection(request) as conn:
            if form.get("lift"):
                await client_tiers.clear_tier_override(conn, actor, client_id)
                return _back(request, client_id, "override_lifted")
            tier = values["tier"] if isinstance(values["tier"], str) and values["tier"] else None
            try:
                day = date.fromisoformat(str(values["until"]))
            except ValueError:
                raise BadRequest({"tier_override_until": "Field required"}) from None
            await client_tiers.set_tier_override(conn, actor, client_id, tier, end_of_day(day, tz_of(request)),
                                               now=now_of(request))
    except (BadRequest, Conflict) as error:
        return await _failed(request, "override", error, values)
    return _back(request, client_id, "override")


@routes.post("/clients/{client_id}/status")
@endpoint(produces="text/html", tag="console")
async def client_status(request: web.Request) -> web.Response:
    """Block a client (no vouchers issued or redeemed) or unblock it."""
    actor, form = await writer_form(request)
    client_id = parse_id(request.match_info["client_id"])
    wanted = form.get("status")
    if wanted not in ("active", "blocked"):
        return await _failed(request, "status", BadRequest({"status": "not an allowed value"}), {})
    async with connection(request) as conn:
        await clients.update_client(conn, actor, client_id, status=wanted)
    return _back(request, client_id, "blocked" if wanted == "blocked" else "unblocked")


@routes.post("/clients/{client_id}/wallet-link")
@endpoint(produces="text/html", tag="console")
async def wallet_link(request: web.Request) -> web.Response:
    """Mint a one-time link (15 minutes) that opens the client's wallet; shown once, on this page."""
    actor, _ = await writer_form(request)
    client_id = parse_id(request.match_info["client_id"])
    async with connection(request) as conn:
        token, expires_at = await wallet_links.mint(conn, actor, client_id, now_of(request))
    return await _show(request, link={"url": wallet_links.link_url(request.config_dict[CONFIG], token), "expires_at": expires_at})
