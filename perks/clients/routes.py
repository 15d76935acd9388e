"""HTTP: enrolling clients, reading them, changing their tier and status, importing them from a CSV file, their
tier history and one-time wallet links."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from perks.clients import imports, service, tiers
from perks.clients.fields import MAX_TAGS, Birthday, ClientName, ExternalRef, Phone, Status, Tags
from perks.clients.tiers import clear_tier_override, set_tier_override
from perks.clients.wallet_links import link_url, mint
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_READERS, BANK_STAFF_WRITERS
from perks.core.batches import Problems
from perks.core.endpoint import endpoint, principal_of, read_capped
from perks.core.errors import BadRequest
from perks.core.fields import CODE_PATTERN, Code, Patch, cursor_value, refuse_null
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.today import bank_today
from perks.core.validation import Body

routes = web.RouteTableDef()

# This body is read here, not by the app-wide 1 MiB limit: a file of many clients is larger.
CLIENT_IMPORT_MAX_BYTES = 16 * 1024 * 1024


class ClientCreate(Body):
    external_ref: ExternalRef
    name: ClientName
    phone: Phone | None = None
    birthday: Birthday | None = None
    tier: Code | None = Field(None, description="A tier's code; null or left out: no tier (no perks).")


class ClientPatch(Patch):
    name: ClientName = None
    phone: Phone | None = None
    birthday: Birthday | None = None
    tier: Code | None = Field(None, description="A tier's code; null: no tier (no perks).")
    status: Status = Field(None, description="`blocked`: no vouchers are issued or redeemed for the client.")
    tier_override_until: AwareDatetime | None = Field(
        None,
        description="Hold the tier (the one sent in `tier`, else the current one) against tier evaluation until "
        "this instant (in the future); null lifts a hold.",
    )

    _not_null = refuse_null("name", "status")


class ClientView(BaseModel):
    id: str
    external_ref: str
    name: str
    phone: str | None
    birthday: date | None
    tier: str | None
    status: Status
    created_at: datetime
    updated_at: datetime
    tier_override_until: datetime | None = Field(description="Tier evaluation leaves the tier alone until then.")
    tags: list[str] = Field(description="The client's segments; an entitlement may require one (`required_tag`).")


class TagsPut(Body):
    tags: Tags


class ClientQuery(PageQuery):
    external_ref: str | None = Field(None, max_length=64, description="Only the client with this reference.")
    tier: str | None = Field(None, pattern=CODE_PATTERN, description="Only clients of this tier.")
    status: Status | None = Field(None, description="Only clients in this status.")
    tag: str | None = Field(None, pattern=CODE_PATTERN, description="Only clients carrying this tag.")


@routes.post("/api/v1/clients")
@endpoint(roles=BANK_STAFF_WRITERS, body=ClientCreate, response=ClientView, status=201, errors=("conflict",), tag="clients")
async def create_client(request: web.Request, body: ClientCreate) -> web.Response:
    """Enrol a client.

    The client starts `active`. 409 `conflict` when `external_ref` is taken; 400 naming `tier` for an unknown tier."""
    async with request.config_dict[POOL].acquire() as conn:
        client = await service.create_client(
            conn, principal_of(request), today=bank_today(request), **body.model_dump()
        )
    return json_response(client, status=201)


@routes.get("/api/v1/clients")
@endpoint(roles=BANK_STAFF_READERS, query=ClientQuery, response=Page[ClientView], tag="clients")
async def list_clients(request: web.Request, query: ClientQuery) -> web.Response:
    """The clients, oldest first; filter by `external_ref`, `tier`, `status` or `tag`."""
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_clients(
            conn,
            external_ref=query.external_ref,
            tier=query.tier,
            status=query.status,
            tag=query.tag,
            after=after,
            limit=query.limit + 1,
        )
    return json_response(page(rows, query.limit, time_id_key))


@routes.get("/api/v1/clients/{client_id}")
@endpoint(roles=BANK_STAFF_READERS, response=ClientView, errors=("not_found",), tag="clients")
async def get_client(request: web.Request) -> web.Response:
    """One client."""
    client_id = parse_id(request.match_info["client_id"])
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_client(conn, client_id))


@routes.patch("/api/v1/clients/{client_id}")
@endpoint(roles=BANK_STAFF_WRITERS, body=ClientPatch, response=ClientView, errors=("not_found",), tag="clients")
async def update_client(request: web.Request, body: ClientPatch) -> web.Response:
    """Change a client's tier, status, name, phone or birthday.

    Fields left out stay as they are; `tier`, `phone` and `birthday` may be set to null. `external_ref` never
    changes. A new tier applies at once, to vouchers already issued too, and joins the tier history. With
    `tier_override_until`, tier evaluation leaves the tier alone until then (reason `override` in the history);
    without it, the next evaluation may change the tier again."""
    client_id = parse_id(request.match_info["client_id"])
    actor, changes = principal_of(request), body.changes()
    overriding = "tier_override_until" in changes
    until = changes.pop("tier_override_until", None)
    tier_sent = "tier" in changes
    tier = changes.pop("tier", None) if overriding else None
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn, conn.transaction():
        client = await service.update_client(conn, actor, client_id, today=bank_today(request), now=now, **changes)
        if overriding:
            if until is None and not tier_sent:
                await clear_tier_override(conn, actor, client_id)
            else:
                await set_tier_override(conn, actor, client_id, tier if tier_sent else client["tier"], until, now=now)
            held = await service.get_client(conn, client_id)
            await service.record_manual_tier_change(conn, client_id, client["tier"], held["tier"], now)
            client = held
    return json_response(client)


@routes.put("/api/v1/clients/{client_id}/tags")
@endpoint(roles=BANK_STAFF_WRITERS, body=TagsPut, response=ClientView, errors=("not_found",), tag="clients")
async def put_tags(request: web.Request, body: TagsPut) -> web.Response:
    """Replace a client's tags (segments).

    Codes `[a-z0-9_]{1,32}`, at most 32 once repeats are merged; `[]` clears them. An entitlement with a
    `required_tag` applies only to clients carrying that tag, at once."""
    client_id = parse_id(request.match_info["client_id"])
    if len(body.tags) > MAX_TAGS:
        raise BadRequest({"tags": f"at most {MAX_TAGS} distinct tags"})
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.set_tags(conn, principal_of(request), client_id, body.tags))


# Import --------------------------------------------------------------------------------------------------


class ImportResult(BaseModel):
    received: int
    created: int
    updated: int
    unchanged: int


@routes.post("/api/v1/clients/import")
@endpoint(roles=BANK_STAFF_WRITERS, response=ImportResult, consumes="text/csv", tag="clients")
async def import_clients(request: web.Request) -> web.Response:
    """Create or update clients from a CSV file (`Content-Type: text/csv`, at most 16 MiB).

    UTF-8 (a BOM is accepted); a header line `external_ref,name,phone,birthday,tier,tags` (`phone`, `birthday`,
    `tier`, `tags` optional, any order; `tags` is `;`-separated, e.g. `car_owner;parent`, and replaces the
    client's tags). Upserts on `external_ref`: an empty optional cell gives a new client no value and
    leaves an existing client's value as it is. All or nothing: any bad line and nothing is applied; the 400 names
    every one, `details.errors` = `[{line, field, reason}]` (line 1 is the header)."""
    if request.content_type != "text/csv":
        raise BadRequest({"body": "must be text/csv"})
    raw = await read_capped(request, CLIENT_IMPORT_MAX_BYTES)
    now = request.config_dict[CLOCK].now()
    problems = Problems("line")
    records = imports.read_csv_file(io.BytesIO(raw), bank_today(request), problems)
    async with request.config_dict[POOL].acquire() as conn:
        result = await imports.import_clients(conn, principal_of(request), records, problems, now=now)
    return json_response(result)


# The tier history and wallet links ------------------------------------------------------------------------


class ChangedBy(BaseModel):
    id: str | None
    username: str
    role: str


class TierChange(BaseModel):
    id: str
    client_id: str
    from_tier: str | None
    to_tier: str | None
    reason: Literal["evaluation", "override", "manual", "import"]
    points: int | None = Field(description="The trailing-twelve-month points that decided an evaluation.")
    override_until: datetime | None = Field(description="Until when an override holds.")
    changed_at: datetime
    actor: ChangedBy


@routes.get("/api/v1/clients/{client_id}/tier-history")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[TierChange], errors=("not_found",), tag="points")
async def tier_history(request: web.Request, query: PageQuery) -> web.Response:
    """A client's tier changes, newest first."""
    client_id = parse_id(request.match_info["client_id"])
    after = cursor_value(query.cursor, int)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await tiers.tier_history(conn, client_id, after, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [int(row["id"])]))


class WalletLink(BaseModel):
    url: str
    expires_at: datetime


@routes.post("/api/v1/clients/{client_id}/wallet-links")
@endpoint(
    roles=BANK_STAFF_WRITERS, response=WalletLink, status=201, errors=("not_found", "client_blocked"), tag="clients"
)
async def create_wallet_link(request: web.Request) -> web.Response:
    """Mint a one-time link that opens the client's wallet page in a browser.

    The link works once, within 15 minutes, and only while the client is not blocked (a blocked client gets
    none: 403 `client_blocked`); only a hash of it is stored. It is built on the configured public base URL
    (`PERKS_PUBLIC_URL`). Give it to the client only (it opens their wallet without a password)."""
    client_id = parse_id(request.match_info["client_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        token, expires_at = await mint(conn, principal_of(request), client_id, now)
    url = link_url(request.config_dict[CONFIG], token)
    return json_response({"url": url, "expires_at": expires_at}, status=201)
