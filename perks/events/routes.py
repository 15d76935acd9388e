"""HTTP: reading the event outbox with a cursor (for systems that prefer pulling to webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import POOL
from perks.core.auth import BANK_AUDIT_READERS
from perks.core.endpoint import endpoint
from perks.core.jsonutil import json_response
from perks.core.schemas import Page
from perks.core.validation import Query
from perks.events import service
from perks.events.service import EVENT_TYPES

routes = web.RouteTableDef()

MAX_EVENT_ID = 2**63 - 1


class EventQuery(Query):
    after: int = Field(0, ge=0, le=MAX_EVENT_ID, description="The id of the last event already read (`next_cursor` "
                       "of the previous page); 0 or left out: from the first event.")
    types: str | None = Field(None, max_length=500, description="Comma-separated event types to keep: "
                              + ", ".join(f"`{t}`" for t in EVENT_TYPES) + ".")
    limit: int = Field(50, ge=1, le=500)


class Event(BaseModel):
    id: str = Field(description="Opaque; pass the last one read back as `after`.")
    type: str = Field(description="One of " + ", ".join(f"`{t}`" for t in EVENT_TYPES) + ".")
    occurred_at: datetime
    data: dict[str, Any] = Field(description="The event's facts: ids as strings, instants in RFC 3339; see docs/events.md.")


@routes.get("/api/v1/events")
@endpoint(roles=BANK_AUDIT_READERS, query=EventQuery, response=Page[Event], tag="events")
async def list_events(request: web.Request, query: EventQuery) -> web.Response:
    """The event outbox in event order, after the event `after`.

    Only final events are listed (every transaction that could still commit an earlier one has ended), so a reader
    following `next_cursor` never misses one. Event order is the order of the writing transactions, then of ids:
    ids only identify events and need not increase along the stream. `next_cursor` is the last event's id when the
    page is full, else null (read again later with `after` = the last id seen). 400 naming `types` for an unknown
    type, naming `after` for an id that is no event."""
    types = service.parse_types(query.types)
    async with request.config_dict[POOL].acquire() as conn:
        items = await service.list_events(conn, after=query.after, types=types, limit=query.limit)
    next_cursor = items[-1]["id"] if len(items) == query.limit else None
    return json_response({"items": items, "next_cursor": next_cursor})
