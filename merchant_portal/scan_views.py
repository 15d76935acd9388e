"""Portal pages: scan a voucher, check its preview, confirm once, see the outcome in words."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from merchant_portal.pages import checked_form, current_principal, explain, form_text, render
from perks.catalogue import service as catalogue
from perks.core.appkeys import POOL
from perks.core.auth import Principal
from perks.core.endpoint import endpoint
from perks.core.errors import ApiError, NotFound
from perks.merchants import service as merchants
from perks.redemption import service as redemption

routes = web.RouteTableDef()

# Far more than any voucher (213 characters); a longer paste is refused as not a voucher without decoding it.
MAX_TOKEN_CHARS = 2048
STORE_LIST_LIMIT = 200


async def store_choices(conn: asyncpg.Connection, actor: Principal) -> list[dict[str, Any]]:
    """The stores the actor may redeem at: a cashier's own; every store of a manager's merchant."""
    stores = await merchants.list_stores(conn, UUID(actor.merchant_id), None, STORE_LIST_LIMIT)
    if actor.role == "cashier":
        return [store for store in stores if str(store["id"]) == actor.store_id]
    return stores


def chosen_store(actor: Principal, form: Any) -> UUID | None:
    """The store named in the form (a manager's choice), else none: the service then picks the actor's own."""
    raw = form_text(form, "store_id", 64)
    if actor.role == "cashier" or not raw:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound() from None


async def perk_name(conn: asyncpg.Connection, code: str) -> str:
    """The perk's display name (its code if the catalogue no longer has it)."""
    try:
        return (await catalogue.get_perk(conn, code))["name"]
    except ApiError:
        return code


async def tier_name(conn: asyncpg.Connection, code: str | None) -> str | None:
    """The tier's display name (its code if the catalogue no longer has it)."""
    if code is None:
        return None
    try:
        return (await catalogue.get_tier(conn, code))["name"]
    except ApiError:
        return code


async def _scan_page(
    request: web.Request, actor: Principal, error: str | None = None, status: int = 200, store_id: UUID | None = None
) -> web.Response:
    async with request.config_dict[POOL].acquire() as conn:
        stores = await store_choices(conn, actor)
    wanted = str(store_id) if store_id else request.query.get("store_id")
    selected = wanted or actor.store_id or (str(stores[0]["id"]) if stores else "")
    context = {"tab": "scan", "stores": stores, "selected_store": selected, "error": error}
    return render(request, "scan.html", context, status=status)


@routes.get("/scan")
@endpoint(produces="text/html", tag="portal")
async def scan_page(request: web.Request) -> web.Response:
    """The scan page: camera, a field for a typed or pasted voucher, an image upload."""
    return await _scan_page(request, current_principal(request))


def refusal_page(request: web.Request, code: str, status: int, store_id: Any = None) -> web.Response:
    """The full-screen red outcome, with the reason in words."""
    message = explain(request, code)
    context = {"ok": False, "code": code, "reason": message, "store_id": store_id}
    return render(request, "result.html", context, status=status)


@routes.post("/scan")
@endpoint(produces="text/html", tag="portal")
async def scan_submit(request: web.Request) -> web.Response:
    """Check a scanned voucher (consuming nothing) and show its preview with one confirm button."""
    actor = current_principal(request)
    form = await checked_form(request)
    store_id = chosen_store(actor, form)
    if len(str(form.get("token", ""))) > MAX_TOKEN_CHARS:
        return refusal_page(request, "invalid_token", 400, store_id)
    token = form_text(form, "token", MAX_TOKEN_CHARS)
    if not token:
        return await _scan_page(request, actor, explain(request, "empty_token"), status=400, store_id=store_id)
    async with request.config_dict[POOL].acquire() as conn:
        try:
            preview = await redemption.scan(
                conn, redemption.Terminal.of_app(request.config_dict, actor, store_id), token
            )
        except ApiError as refusal:
            return refusal_page(request, refusal.code, refusal.status, store_id)
        name = await perk_name(conn, preview["perk"])
        tier = await tier_name(conn, preview["client"]["tier"])
    context = {
        "preview": preview,
        "perk_name": name,
        "tier_name": tier,
        "token": token,
        "store_id": str(store_id) if store_id else "",
        # Made once per preview: a second tap on confirm sends the same key and is answered with the first outcome.
        "idempotency_key": str(uuid.uuid4()),
    }
    return render(request, "preview.html", context)


@routes.post("/redeem")
@endpoint(produces="text/html", tag="portal")
async def redeem_submit(request: web.Request) -> web.Response:
    """Redeem the previewed voucher; the form's idempotency key makes a double tap redeem once."""
    actor = current_principal(request)
    form = await checked_form(request)
    token = form_text(form, "token", MAX_TOKEN_CHARS)
    key = form_text(form, "idempotency_key", 255) or None
    store_id = chosen_store(actor, form)
    if not token:
        return refusal_page(request, "invalid_token", 400, store_id)
    fingerprint = redemption.request_fingerprint(
        "POST", "/portal/redeem", {"token": token, "store_id": str(store_id) if store_id else None}
    )
    async with request.config_dict[POOL].acquire() as conn:
        try:
            outcome = await redemption.redeem(
                conn,
                redemption.Terminal.of_app(request.config_dict, actor, store_id),
                token,
                idempotency_key=key,
                request_hash=fingerprint if key else None,
            )
        except ApiError as refusal:
            return refusal_page(request, refusal.code, refusal.status, store_id)
        if outcome.status != 201:
            # A replay of a refusal: the first answer for this key, told again.
            return refusal_page(request, outcome.body["error"]["code"], outcome.status, store_id)
        name = await perk_name(conn, outcome.body["perk"])
    context = {"ok": True, "redemption": outcome.body, "perk_name": name, "replayed": outcome.replayed,
               "store_id": store_id}
    return render(request, "result.html", context)
