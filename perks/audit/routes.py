"""HTTP: reading the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from perks.audit import service
from perks.core.appkeys import POOL
from perks.core.endpoint import endpoint
from perks.core.errors import BadRequest
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, decode_cursor, page
from perks.core.schemas import Page

routes = web.RouteTableDef()


class AuditQuery(PageQuery):
    entity_type: str | None = Field(None, max_length=64)
    entity_id: str | None = Field(None, max_length=64)
    actor: str | None = Field(None, max_length=64)
    from_: AwareDatetime | None = Field(None, alias="from")
    to: AwareDatetime | None = None


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
@endpoint(roles={"admin", "auditor"}, query=AuditQuery, response=Page[AuditEntry], tag="audit")
async def list_audit(request: web.Request, query: AuditQuery) -> web.Response:
    """The audit log, newest first, filtered by entity, actor and time."""
    cursor = decode_cursor(query.cursor, 1)
    before_id = None
    if cursor is not None:
        if not isinstance(cursor[0], int):
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
