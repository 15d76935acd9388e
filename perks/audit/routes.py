"""HTTP: reading the audit log."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from perks.audit import service
from perks.core.appkeys import POOL
from perks.core.auth import BANK_AUDIT_READERS
from perks.core.endpoint import endpoint
from perks.core.errors import BadRequest
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page
from perks.core.schemas import Page

routes = web.RouteTableDef()


# Audit ids are bigints; a forged cursor beyond that range is a bad cursor, not a server error.
MAX_ENTRY_ID = 2**63 - 1
NO_NUL = r"^[^\x00]*$"


def _storable(instant: datetime) -> datetime:
    # PostgreSQL cannot hold an instant whose UTC date falls outside years 1..9999.
    try:
        return instant.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range") from None


Instant = Annotated[AwareDatetime, AfterValidator(_storable)]


class AuditQuery(PageQuery):
    entity_type: str | None = Field(None, max_length=64, pattern=NO_NUL, description="e.g. `merchant`, `user`")
    entity_id: str | None = Field(None, max_length=128, pattern=NO_NUL)
    actor: str | None = Field(None, max_length=64, pattern=NO_NUL, description="the actor's username or id")
    from_: Instant | None = Field(None, alias="from", description="entries at or after this instant")
    to: Instant | None = Field(None, description="entries before this instant")


class AuditActor(BaseModel):
    id: str | None
    username: str
    role: str


class AuditEntry(BaseModel):
    id: str
    at: datetime
    actor: AuditActor
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@routes.get("/api/v1/audit")
@endpoint(roles=BANK_AUDIT_READERS, query=AuditQuery, response=Page[AuditEntry], tag="audit")
async def list_audit(request: web.Request, query: AuditQuery) -> web.Response:
    """The audit log, newest first, filtered by entity, actor and time."""
    if query.from_ is not None and query.to is not None and query.to < query.from_:
        raise BadRequest({"to": "is before from"})
    cursor = decode_cursor(query.cursor, 1)
    before_id = None
    if cursor is not None:
        if type(cursor[0]) is not int or not 0 < cursor[0] <= MAX_ENTRY_ID:
            raise BadRequest({"cursor": "not a valid cursor"})
        before_id = cursor[0]
    async with request.config_dict[POOL].acquire() as conn:
        rows = await service.list_entries(
            conn,
            entity_type=query.entity_type,
            entity_id=query.entity_id,
            actor=query.actor,
            at_from=query.from_,
            at_to=query.to,
            before_id=before_id,
            limit=query.limit + 1,
        )
    return json_response(page(rows, query.limit, lambda row: [int(row["id"])]))
