"""Console pages: the audit log (filters by entity, actor and time; before/after as a readable diff) and the
imports (a points-events CSV or a clients CSV, all or nothing, every bad line named)."""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

from aiohttp import web

from merchant_portal.console.common import connection, now_of, reader, show, tz_of, writer_form
from perks.audit import service as audit
from perks.clients import imports
from perks.core.batches import BatchRejected, Problems
from perks.core.clock import date_bounds
from perks.core.endpoint import endpoint
from perks.core.today import bank_today
from perks.core.errors import ApiError, BadRequest
from perks.points import events

routes = web.RouteTableDef()
AUDIT_PAGE = 25
IMPORT_MAX_BYTES = 16 * 1024 * 1024


def diff_rows(before: Any, after: Any) -> list[dict[str, Any]]:
    """One row per field of either side: its value before and after, and whether it changed."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    rows = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        rows.append({
            "field": name,
            "before": None if name not in before else _text(old),
            "after": None if name not in after else _text(new),
            "changed": name not in before or name not in after or old != new,
        })
    return rows


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _day(text: str | None, field: str, problems: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems[field] = "not an allowed value"
        return None


@routes.get("/audit")
@endpoint(produces="text/html", tag="console")
async def audit_page(request: web.Request) -> web.Response:
    """The audit log, newest first: filter by entity type and id, actor, and days (bank time)."""
    reader(request)
    query = request.query
    filters = {name: query.get(name, "").strip()[:128] for name in ("entity_type", "entity_id", "actor", "from", "to")}
    problems: dict[str, str] = {}
    day_from, day_to = _day(filters["from"], "from", problems), _day(filters["to"], "to", problems)
    before_text = query.get("before", "")
    before_id = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    if problems or any("\x00" in value for value in filters.values()):
        raise BadRequest(problems or {"body": "not an allowed value"})
    tz = tz_of(request)
    at_from = date_bounds(day_from, tz)[0] if day_from else None
    at_to = date_bounds(day_to, tz)[1] if day_to else None
    async with connection(request) as conn:
        entries = await audit.list_entries(
            conn, entity_type=filters["entity_type"] or None, entity_id=filters["entity_id"] or None,
            actor=filters["actor"] or None, at_from=at_from, at_to=at_to, before_id=before_id, limit=AUDIT_PAGE + 1,
        )
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    next_url = str(request.rel_url.update_query(before=entries[-1]["id"])) if more and entries else None
    first_url = str(request.rel_url.without_query("before")) if before_id else None
    for entry in entries:
        entry["diff"] = diff_rows(entry["before"], entry["after"])
    context = {"tab": "audit", "entries": entries, "filters": filters,
               "links": {"next_url": next_url, "first_url": first_url}}
    return show(request, "console/audit.html", context)


# Imports --------------------------------------------------------------------------------------------------------


@routes.get("/imports")
@endpoint(produces="text/html", tag="console")
async def imports_page(request: web.Request) -> web.Response:
    """Upload a points-events CSV or a clients CSV."""
    reader(request)
    return show(request, "console/imports.html", {"tab": "imports", "result": None, "kind": None, "problems": None})


async def _upload(request: web.Request) -> tuple[Any, bytes]:
    actor, form = await writer_form(request)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadRequest({"file": "Field required"})
    raw = upload.file.read(IMPORT_MAX_BYTES + 1)
    if len(raw) > IMPORT_MAX_BYTES:
        raise ApiError("payload_too_large", status=413)
    return actor, raw


async def _result(request: web.Request, kind: str, run: Any) -> web.Response:
    try:
        result = await run
    except BatchRejected as rejected:
        context = {"tab": "imports", "kind": kind, "result": None, "problems": rejected.details}
        return show(request, "console/imports.html", context, status=400)
    return show(request, "console/imports.html", {"tab": "imports", "kind": kind, "result": result, "problems": None})


@routes.post("/imports/events")
@endpoint(produces="text/html", tag="console")
async def import_events(request: web.Request) -> web.Response:
    """Ingest a points-events CSV (`event_ref,client_external_ref,source,amount_fen,occurred_at`): all or nothing."""
    actor, raw = await _upload(request)
    now = now_of(request)

    async def run() -> dict[str, Any]:
        problems = Problems("line")
        records = events.read_csv_file(io.BytesIO(raw), now, problems)
        async with connection(request) as conn:
            return await events.ingest_events(conn, actor, records, problems, now=now, origin="console")

    return await _result(request, "events", run())


@routes.post("/imports/clients")
@endpoint(produces="text/html", tag="console")
async def import_clients(request: web.Request) -> web.Response:
    """Create or update clients from a CSV (`external_ref,name,phone,birthday,tier`): all or nothing."""
    actor, raw = await _upload(request)
    now = now_of(request)

    async def run() -> dict[str, Any]:
        problems = Problems("line")
        records = imports.read_csv_file(io.BytesIO(raw), bank_today(request), problems)
        async with connection(request) as conn:
            return await imports.import_clients(conn, actor, records, problems, now=now)

    return await _result(request, "clients", run())
