"""Portal pages: today's redemptions at the store (bank time zone), and a manager's void with a reason."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from merchant_portal.pages import checked_form, current_principal, explain, form_text, redirect, render, site_of
from perks.catalogue import service as catalogue
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import Principal
from perks.core.clock import day_bounds
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError
from perks.core.ids import parse_id
from perks.merchants import service as merchants
from perks.redemption import service as redemption

routes = web.RouteTableDef()

PAGE_SIZE = 100
NAME_LIST_LIMIT = 500
MAX_REASON_CHARS = 500


async def perk_names(conn: asyncpg.Connection) -> dict[str, str]:
    """Every perk's display name by code."""
    return {perk["code"]: perk["name"] for perk in await catalogue.list_perks(conn, None, NAME_LIST_LIMIT)}


async def store_names(conn: asyncpg.Connection, actor: Principal) -> dict[str, str]:
    """The names of the actor's merchant's stores by id."""
    stores = await merchants.list_stores(conn, UUID(actor.merchant_id), None, NAME_LIST_LIMIT)
    return {str(store["id"]): store["name"] for store in stores}


async def _today_page(
    request: web.Request, actor: Principal, *, error: str | None = None, status: int = 200
) -> web.Response:
    config = request.config_dict[CONFIG]
    now = request.config_dict[CLOCK].now()
    day_start, day_end = day_bounds(now, config.timezone)
    cursor = request.query.get("cursor") or None
    async with request.config_dict[POOL].acquire() as conn:
        listing = await redemption.list_merchant_redemptions(
            conn,
            actor,
            at_from=day_start,
            at_to=day_end,
            store_id=None,
            cursor=cursor,
            limit=PAGE_SIZE,
            now=now,
            tz=config.timezone,
        )
        names = await perk_names(conn)
        stores = await store_names(conn, actor)
    items: list[dict[str, Any]] = [
        item
        | {
            "perk_name": names.get(item["perk"], item["perk"]),
            "store_name": stores.get(str(item["store_id"]), ""),
            "local_time": item["redeemed_at"].astimezone(config.timezone).strftime("%H:%M"),
        }
        for item in listing["items"]
    ]
    context = {
        "tab": "today",
        "day": day_start.date(),
        "items": items,
        "next_cursor": listing["next_cursor"],
        "redeemed_count": sum(1 for item in items if item["status"] == "redeemed"),
        "error": error,
        "voided": request.query.get("voided"),
        "show_store": actor.role == "manager" and len(stores) > 1,
    }
    return render(request, "today.html", context, status=status)


@routes.get("/today")
@endpoint(produces="text/html", tag="portal")
async def today_page(request: web.Request) -> web.Response:
    """The store's redemptions of today, newest first (a manager: every store of the merchant)."""
    return await _today_page(request, current_principal(request))


@routes.post("/redemptions/{redemption_id}/void")
@endpoint(produces="text/html", tag="portal")
async def void_submit(request: web.Request) -> web.Response:
    """Void a redemption with a reason (its merchant's manager, within 24 hours): quota and capacity come back."""
    actor = current_principal(request)
    form = await checked_form(request)
    redemption_id = parse_id(request.match_info["redemption_id"])
    reason = form_text(form, "reason", MAX_REASON_CHARS)
    if not reason:
        return await _today_page(request, actor, error=explain(request, "reason_required"), status=400)
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        try:
            await redemption.void(conn, actor, redemption_id, reason, now, as_bank=False)
        except ApiError as refusal:
            return await _today_page(request, actor, error=explain(request, refusal.code), status=refusal.status)
    return redirect(site_of(request).url(f"/today?voided={redemption_id}"))
