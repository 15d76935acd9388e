"""HTTP: scanning and redeeming vouchers, voids, and the redemption lists of merchants and clients."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_READERS, BANK_STAFF_WRITERS, CLIENTS, MERCHANT_MANAGERS, MERCHANT_ROLES
from perks.core.endpoint import endpoint, principal_of
from perks.core.errors import Refusal
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery
from perks.core.schemas import Page
from perks.core.validation import Body
from perks.redemption import service
from perks.redemption.context import Terminal
from perks.redemption.idempotency import KEY_HEADER, REPLAYED_HEADER, check_key
from perks.redemption.models import VoidRequest

routes = web.RouteTableDef()

REFUSALS = tuple(Refusal.STATUS)
STORE_ERRORS = ("not_found",)
# Far above any voucher (213 characters); the key ring refuses anything longer as not a voucher.
Token = Field(min_length=1, max_length=4096, description="The voucher token, as read from its QR code.")
StoreId = Field(
    None,
    description="The store redeeming: a cashier's own (default); for a manager one of its merchant's stores "
    "(default: the manager's own store, else the merchant's only store).",
)


class ScanRequest(Body):
    token: str = Token
    store_id: UUID | None = StoreId


class RedeemRequest(Body):
    token: str = Token
    store_id: UUID | None = StoreId


class ClientView(BaseModel):
    display_name: str = Field(description="The client's name, masked: first and last character kept, the rest `*`.")
    tier: str | None


class ScanResult(BaseModel):
    voucher_id: str
    perk: str
    client: ClientView
    remaining_after: int | None = Field(
        description="The client's yearly remaining for the perk once redeemed, as /me/entitlements would show it; "
        "null: unlimited."
    )
    expires_at: datetime


class RedemptionCreated(BaseModel):
    id: str
    status: Literal["redeemed"]
    voucher_id: str
    perk: str
    client: ClientView
    merchant_id: str
    store_id: str
    redeemed_at: datetime
    client_remaining: int | None = Field(description="The client's yearly remaining for the perk; null: unlimited.")
    merchant_remaining: int | None = Field(
        description="The merchant's yearly capacity left for the perk, as this redemption saw it (a large capacity "
        "is counted in several rows, so redemptions at the same instant at other terminals may report the same "
        "figure; the capacity itself is never passed); null: no cap."
    )


class RedemptionView(BaseModel):
    id: str
    status: Literal["redeemed", "voided"]
    voucher_id: str
    perk: str
    client: ClientView
    merchant_id: str
    store_id: str
    redeemed_at: datetime
    voided_at: datetime | None
    void_reason: str | None


class ClientRedemptionView(BaseModel):
    id: str
    status: Literal["redeemed", "voided"]
    voucher_id: str
    perk: str
    perk_name: str
    merchant_id: str
    merchant_name: str
    store_id: str
    store_name: str
    redeemed_at: datetime
    voided_at: datetime | None


class MerchantRedemptionsQuery(PageQuery):
    at_from: AwareDatetime | None = Field(None, alias="from", description="Redeemed at or after (RFC 3339).")
    at_to: AwareDatetime | None = Field(None, alias="to", description="Redeemed before (RFC 3339).")
    store_id: UUID | None = Field(None, description="One store of the merchant only.")


def _context(request: web.Request) -> tuple[datetime, ZoneInfo]:
    return request.config_dict[CLOCK].now(), request.config_dict[CONFIG].timezone


@routes.post("/api/v1/merchant/scan")
@endpoint(
    roles=MERCHANT_ROLES,
    body=ScanRequest,
    response=ScanResult,
    errors=(*REFUSALS, *STORE_ERRORS, "too_many_attempts"),
    tag="redeeming",
    session_check=False,  # perks_redeem checks the session's generation in the same round trip
)
async def scan(request: web.Request, body: ScanRequest) -> web.Response:
    """Check a voucher as redeeming would, consuming nothing.

    Refusals are those of redeeming, in the same order (the first that applies). The store is checked as for a
    redemption: a cashier naming another store is 403, a store of another merchant 404. Scans count towards the
    terminal rate limit (see redeeming)."""
    terminal = Terminal.of_app(request.config_dict, principal_of(request), body.store_id)
    async with request.config_dict[POOL].acquire() as conn:
        result = await service.scan(conn, terminal, body.token)
    return json_response(result)


@routes.post("/api/v1/merchant/redemptions")
@endpoint(
    roles=MERCHANT_ROLES,
    body=RedeemRequest,
    response=RedemptionCreated,
    status=201,
    errors=(*REFUSALS, *STORE_ERRORS, "idempotency_key_reused", "too_many_attempts"),
    headers={
        KEY_HEADER: (
            "Optional, 1 to 255 characters: the same key with the same body from the same merchant within "
            "24 hours returns the first response again, with the header `Idempotent-Replayed: true`.",
            # Printable ASCII is what any client can send in a header; other valid UTF-8 is taken too.
            {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
        )
    },
    tag="redeeming",
    session_check=False,  # perks_redeem checks the session's generation in the same round trip
)
async def redeem(request: web.Request, body: RedeemRequest) -> web.Response:
    """Redeem a voucher, exactly once.

    One transaction records the redemption and uses one of the client's yearly quota, the client's monthly cap
    and the merchant's yearly capacity for the perk (quota year and month of this instant in the bank's time
    zone); if any is used up, nothing is recorded and the refusal says which. Where several refusals apply, the
    first in the contract's table is returned.

    **Idempotency.** With an `Idempotency-Key`, the first outcome for that key at this merchant is kept for 24
    hours: the redemption, and also a refusal (one key, one outcome: retry a refused voucher with a new key).
    The same key with the same request (method, path and body; an omitted `store_id` equals `null`) returns the
    first status and body again, with `Idempotent-Replayed: true`; another body gives 422
    `idempotency_key_reused`. A request sent while the key's first request is still being decided waits for it,
    then replays it. Errors that decide nothing (400 for the body or header, 401, 403, 404 for the store, 5xx)
    are not kept, so the key may be retried.

    **Rate limit.** Scans and redemptions of one user are counted per minute, across every worker; past
    `PERKS_TERMINAL_RATE_LIMIT` (default 120) the request is 429 `too_many_attempts` and consumes nothing. A
    session made stale (user disabled, password changed) is 401 here too, checked in the same round trip.

    **Grants.** When the tier's quota (or monthly cap) is used up, or the tier has no entitlement to the perk,
    the soonest-expiring active grant with a use left serves (tie: the oldest); grant uses count against the
    merchant's capacity but not the tier's quota or cap. An expired, revoked or used-up grant is
    `quota_exhausted`. `client_remaining` stays the tier's yearly remaining (0 for a perk held through grants
    only)."""
    key = check_key(request.headers.get(KEY_HEADER))
    fingerprint = service.request_fingerprint(request.method, request.path, body.model_dump(mode="json")) if key else None
    terminal = Terminal.of_app(request.config_dict, principal_of(request), body.store_id)
    async with request.config_dict[POOL].acquire() as conn:
        outcome = await service.redeem(conn, terminal, body.token, idempotency_key=key, request_hash=fingerprint)
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return json_response(outcome.body, status=outcome.status, headers=headers)


@routes.post("/api/v1/merchant/redemptions/{redemption_id}/void")
@endpoint(
    roles=MERCHANT_MANAGERS,
    body=VoidRequest,
    response=RedemptionView,
    errors=("not_found", "merchant_suspended", "already_voided", "void_window_closed"),
    tag="redeeming",
)
async def void_as_merchant(request: web.Request, body: VoidRequest) -> web.Response:
    """Void one of the merchant's redemptions within 24 hours of redeeming it.

    The client's yearly quota and monthly cap and the merchant's capacity come back, in the quota year and month
    the redemption counted in (or, for a redemption that drew on a grant, that grant's use); the voucher stays
    spent. Audited as `redemption.void`, with a `redemption.voided` event.

    A suspended merchant's manager may not void (403 `merchant_suspended`): suspension stops the partner giving
    itself capacity back; the bank (admin, operator) still may, at `POST /redemptions/{id}/void`."""
    return await _void(request, body, as_bank=False)


@routes.post("/api/v1/redemptions/{redemption_id}/void")
@endpoint(
    roles=BANK_STAFF_WRITERS,
    body=VoidRequest,
    response=RedemptionView,
    errors=("not_found", "already_voided"),
    tag="redeeming",
)
async def void_as_bank(request: web.Request, body: VoidRequest) -> web.Response:
    """Void any redemption, at any time.

    The client's yearly quota and monthly cap and the merchant's capacity come back, in the quota year and month
    the redemption counted in (or the grant's use); the voucher stays spent. Allowed for a suspended merchant's
    redemptions too. Audited as `redemption.void`, with a `redemption.voided` event."""
    return await _void(request, body, as_bank=True)


async def _void(request: web.Request, body: VoidRequest, *, as_bank: bool) -> web.Response:
    redemption_id = parse_id(request.match_info["redemption_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        voided = await service.void(conn, principal_of(request), redemption_id, body.reason, now, as_bank=as_bank)
    return json_response(voided)


@routes.get("/api/v1/merchant/redemptions")
@endpoint(
    roles=MERCHANT_ROLES,
    query=MerchantRedemptionsQuery,
    response=Page[RedemptionView],
    errors=("not_found",),
    tag="redeeming",
)
async def list_merchant_redemptions(request: web.Request, query: MerchantRedemptionsQuery) -> web.Response:
    """The merchant's redemptions, newest first.

    A manager sees every store of its merchant (or the one named by `store_id`); a cashier sees its own store's
    redemptions of today (in the bank's time zone) only: `from` is raised to today's midnight, and naming
    another store is 403."""
    now, tz = _context(request)
    async with request.config_dict[POOL].acquire() as conn:
        result = await service.list_merchant_redemptions(
            conn,
            principal_of(request),
            at_from=query.at_from,
            at_to=query.at_to,
            store_id=query.store_id,
            cursor=query.cursor,
            limit=query.limit,
            now=now,
            tz=tz,
        )
    return json_response(result)


@routes.get("/api/v1/merchant/redemptions/{redemption_id}")
@endpoint(roles=MERCHANT_ROLES, response=RedemptionView, errors=("not_found",), tag="redeeming")
async def get_merchant_redemption(request: web.Request) -> web.Response:
    """One redemption of the merchant (a cashier: of its own store)."""
    redemption_id = parse_id(request.match_info["redemption_id"])
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_redemption(conn, principal_of(request), redemption_id))


@routes.get("/api/v1/redemptions/{redemption_id}")
@endpoint(roles=BANK_STAFF_READERS, response=RedemptionView, errors=("not_found",), tag="redeeming")
async def get_redemption(request: web.Request) -> web.Response:
    """Any redemption, for the bank's staff."""
    redemption_id = parse_id(request.match_info["redemption_id"])
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_redemption(conn, principal_of(request), redemption_id))


@routes.get("/api/v1/me/redemptions")
@endpoint(roles=CLIENTS, query=PageQuery, response=Page[ClientRedemptionView], tag="client")
async def my_redemptions(request: web.Request, query: PageQuery) -> web.Response:
    """The calling client's redemptions, newest first."""
    client_id = parse_id(principal_of(request).id)
    async with request.config_dict[POOL].acquire() as conn:
        result = await service.list_client_redemptions(conn, client_id, cursor=query.cursor, limit=query.limit)
    return json_response(result)
