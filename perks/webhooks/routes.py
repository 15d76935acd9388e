"""HTTP: webhook subscriptions and their deliveries (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_ADMINS
from perks.core.endpoint import endpoint, principal_of
from perks.core.fields import Patch, refuse_null, single_line
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page, time_id_key
from perks.core.schemas import Page
from perks.core.validation import Body
from perks.events.service import EVENT_TYPES
from perks.webhooks import service

routes = web.RouteTableDef()

EventType = Literal[
    "redemption.created", "redemption.voided", "client.tier_changed", "statement.finalized", "grant.created",
    "merchant.suspended",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host and no credentials in it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url", "must be an absolute http or https URL")
    if parts.username or parts.password:
        raise PydanticCustomError("url", "must not carry a user name or password")
    if any(char.isspace() for char in value):
        raise PydanticCustomError("url", "must not contain spaces")
    return value


def distinct(types: list[str]) -> list[str]:
    """The event types, each once, in the order given."""
    return list(dict.fromkeys(types))


Url = Annotated[
    str, Field(min_length=1, max_length=2000, description="Where deliveries are POSTed: http or https (use https "
                                                          "in production)."),
    AfterValidator(http_url),
]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=20), AfterValidator(distinct)]
Description = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(single_line)]


class WebhookCreate(Body):
    url: Url
    event_types: EventTypes
    description: Description | None = None


class WebhookPatch(Patch):
    url: Url = None
    event_types: EventTypes = None
    description: Description | None = None
    status: Literal["active", "paused"] = Field(None, description="`paused`: nothing is delivered until `active` "
                                                "again; then what happened meanwhile is delivered, in order.")

    _not_null = refuse_null("url", "event_types", "status")


class WebhookView(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["active", "paused"]
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookView):
    secret: str = Field(description="The signing secret; shown only here (and by rotate-secret).")


class SecretView(BaseModel):
    secret: str = Field(description="The new signing secret, used from the next delivery on; shown only here.")


class DeliveryView(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="The HTTP status of the last attempt; null if no answer came.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried next (it may also wait "
                                             "for an earlier delivery of the same subscription).")
    created_at: datetime
    delivered_at: datetime | None


class DeliveryQuery(PageQuery):
    status: Literal["pending", "delivered", "failed"] | None = Field(None, description="Only deliveries in this status.")


def _now(request: web.Request) -> datetime:
    return request.config_dict[CLOCK].now()


@routes.post("/api/v1/webhooks")
@endpoint(roles=BANK_ADMINS, body=WebhookCreate, response=WebhookCreated, status=201, tag="webhooks")
async def create_webhook(request: web.Request, body: WebhookCreate) -> web.Response:
    """Subscribe a URL to event types.

    It receives the events that happen from now on, each once, in event order, signed with the `secret` returned
    here and nowhere else (see docs/events.md for verifying it)."""
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.create_webhook(
            conn, principal_of(request), request.config_dict[CONFIG].secret, url=body.url,
            event_types=body.event_types, description=body.description, now=_now(request),
        )
    return json_response(view, status=201)


@routes.get("/api/v1/webhooks")
@endpoint(roles=BANK_ADMINS, query=PageQuery, response=Page[WebhookView], tag="webhooks")
async def list_webhooks(request: web.Request, query: PageQuery) -> web.Response:
    """The subscriptions, oldest first."""
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_webhooks(conn, after=after, limit=query.limit + 1)
    return json_response(page(rows, query.limit, time_id_key))


@routes.get("/api/v1/webhooks/{webhook_id}")
@endpoint(roles=BANK_ADMINS, response=WebhookView, errors=("not_found",), tag="webhooks")
async def get_webhook(request: web.Request) -> web.Response:
    """One subscription."""
    async with request.config_dict[POOL].acquire() as conn:
        return json_response(await service.get_webhook(conn, parse_id(request.match_info["webhook_id"])))


@routes.patch("/api/v1/webhooks/{webhook_id}")
@endpoint(roles=BANK_ADMINS, body=WebhookPatch, response=WebhookView, errors=("not_found",), tag="webhooks")
async def update_webhook(request: web.Request, body: WebhookPatch) -> web.Response:
    """Pause or resume a subscription, or change its URL, event types or description.

    Fields left out stay as they are. New event types apply to events not yet taken into deliveries."""
    webhook_id = parse_id(request.match_info["webhook_id"])
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.update_webhook(conn, principal_of(request), webhook_id, now=_now(request),
                                            **body.changes())
    return json_response(view)


@routes.delete("/api/v1/webhooks/{webhook_id}")
@endpoint(roles=BANK_ADMINS, status=204, errors=("not_found",), tag="webhooks")
async def delete_webhook(request: web.Request) -> web.Response:
    """Delete a subscription and its deliveries."""
    webhook_id = parse_id(request.match_info["webhook_id"])
    async with request.config_dict[POOL].acquire() as conn:
        await service.delete_webhook(conn, principal_of(request), webhook_id)
    return web.Response(status=204)


@routes.post("/api/v1/webhooks/{webhook_id}/rotate-secret")
@endpoint(roles=BANK_ADMINS, response=SecretView, errors=("not_found",), tag="webhooks")
async def rotate_secret(request: web.Request) -> web.Response:
    """Replace a subscription's signing secret; the old one signs nothing more."""
    webhook_id = parse_id(request.match_info["webhook_id"])
    async with request.config_dict[POOL].acquire() as conn:
        secret = await service.rotate_secret(
            conn, principal_of(request), request.config_dict[CONFIG].secret, webhook_id, now=_now(request)
        )
    return json_response({"secret": secret})


@routes.get("/api/v1/webhooks/{webhook_id}/deliveries")
@endpoint(roles=BANK_ADMINS, query=DeliveryQuery, response=Page[DeliveryView], errors=("not_found",), tag="webhooks")
async def list_deliveries(request: web.Request, query: DeliveryQuery) -> web.Response:
    """A subscription's deliveries, newest first; filter by `status`."""
    webhook_id = parse_id(request.match_info["webhook_id"])
    after = decode_cursor(query.cursor, 2)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_deliveries(conn, webhook_id, status=query.status, after=after,
                                             limit=query.limit + 1)
    return json_response(page(rows, query.limit, time_id_key))


@routes.post("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
@endpoint(roles=BANK_ADMINS, response=DeliveryView, status=202, errors=("not_found", "conflict"), tag="webhooks")
async def retry_delivery(request: web.Request) -> web.Response:
    """Send a failed delivery again now, with a fresh 24 hours of retries.

    Accepted, not yet sent: it goes out as soon as a dispatcher takes it, before the subscription's later
    deliveries. 409 `conflict` when it has already been delivered."""
    webhook_id = parse_id(request.match_info["webhook_id"])
    delivery_id = parse_id(request.match_info["delivery_id"])
    async with request.config_dict[POOL].acquire() as conn:
        view = await service.retry_delivery(conn, principal_of(request), webhook_id, delivery_id,
                                            now=_now(request))
    return json_response(view, status=202)
