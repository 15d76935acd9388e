"""HTTP: points rules, contribution events, a client's points and tier evaluation."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_READERS, BANK_STAFF_WRITERS
from perks.core.batches import Problems
from perks.core.endpoint import Handler, endpoint, principal_of, read_capped, spec_of
from perks.core.errors import BadRequest
from perks.core.fields import cursor_value
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery, page
from perks.core.schemas import Page
from perks.core.validation import validate
from perks.points import evaluation, events, rules
from perks.points.models import RulePut, SourcePath

routes = web.RouteTableDef()

# This body is read here, not by the app-wide 1 MiB limit: 10,000 events take about 2 MiB of JSON.
EVENTS_MAX_BYTES = 8 * 1024 * 1024


def reads_own_body(model: type[BaseModel]):  # type: ignore[no-untyped-def]
    """Document ``model`` as the request body of a handler that reads (and caps) its body itself."""

    def wrap(handler: Handler) -> Handler:
        spec = spec_of(handler)
        assert spec is not None, "put @reads_own_body above @endpoint"
        handler.__perks_endpoint__ = dataclasses.replace(spec, body=model)  # type: ignore[attr-defined]
        return handler

    return wrap


# Rules ----------------------------------------------------------------------------------------------------------


class RuleView(BaseModel):
    source: str
    points_per_yuan: str = Field(description="Points per yuan, as an exact decimal string (`\"1.5\"`).")
    created_at: datetime
    updated_at: datetime


@routes.put("/api/v1/points/rules/{source}")
@endpoint(roles=BANK_STAFF_WRITERS, body=RulePut, response=RuleView, tag="points")
async def put_rule(request: web.Request, body: RulePut) -> web.Response:
    """Set the points rule of a source of contribution.

    The source is a code (`deposit`, `wealth`, `insurance`, or any the bank adds). A rule applies to events
    ingested from then on; events already ingested keep their points."""
    source = validate(SourcePath, {"source": request.match_info["source"]}).source
    async with request.config_dict[POOL].acquire() as conn:
        rule = await rules.put_rule(conn, principal_of(request), source, body.points_per_yuan)
    return json_response(rule)


@routes.get("/api/v1/points/rules")
@endpoint(roles=BANK_STAFF_READERS, query=PageQuery, response=Page[RuleView], tag="points")
async def list_rules(request: web.Request, query: PageQuery) -> web.Response:
    """The points rules, in order of their sources."""
    after = cursor_value(query.cursor, str)
    async with request.config_dict[POOL].acquire() as conn:
        rows = await rules.list_rules(conn, after, query.limit + 1)
    return json_response(page(rows, query.limit, lambda row: [row["source"]]))


# Events ---------------------------------------------------------------------------------------------------------


class IngestResult(BaseModel):
    batch_id: str = Field(description="The audit log's `entity_id` (type `points_batch`) of this batch.")
    received: int
    new: int = Field(description="Events recorded now.")
    known: int = Field(description="Events already recorded with the same data (replays): nothing changed.")


@routes.post("/api/v1/points/events")
@reads_own_body(events.EventBatch)
@endpoint(roles=BANK_STAFF_WRITERS, response=IngestResult, errors=("bad_request", "payload_too_large"), tag="points")
async def ingest_events(request: web.Request) -> web.Response:
    """Ingest contribution events (up to 10,000; at most 8 MiB of JSON).

    Idempotent on `event_ref`: an event already recorded with the same data is counted as `known` and changes
    nothing. All or nothing: if any event is bad (malformed, unknown client, source without a rule, in the future,
    its `event_ref` repeated in the batch or already recorded with other data), nothing is applied and the 400
    names every one: `details.errors` = `[{index, field, reason}]`, `details.fields` = `{"events.<i>.<field>":
    reason}`. Each event's points are computed by its source's rule now and kept."""
    raw = await read_capped(request, EVENTS_MAX_BYTES)
    if not raw.strip():
        raise BadRequest({"body": "a JSON object is required"})
    now = request.config_dict[CLOCK].now()
    problems = Problems("index", "events")
    records = events.json_records(raw, now, problems)
    async with request.config_dict[POOL].acquire() as conn:
        result = await events.ingest_events(conn, principal_of(request), records, problems, now=now, origin="api")
    return json_response(result)


class ClientPoints(BaseModel):
    client_id: str
    points: int = Field(description="Points of events with window_from < occurred_at <= window_to.")
    window_from: datetime = Field(description="Twelve months before window_to, in the bank's time zone.")
    window_to: datetime
    by_source: dict[str, int]


@routes.get("/api/v1/clients/{client_id}/points")
@endpoint(roles=BANK_STAFF_READERS, response=ClientPoints, errors=("not_found",), tag="points")
async def client_points(request: web.Request) -> web.Response:
    """A client's points: those earned in the trailing twelve months."""
    client_id = parse_id(request.match_info["client_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        points = await events.client_points(conn, client_id, now, request.config_dict[CONFIG].timezone)
    return json_response(points)


# Tiers ----------------------------------------------------------------------------------------------------------


class EvaluationResult(BaseModel):
    id: str = Field(description="The audit log's `entity_id` (type `tier_evaluation`) of this run.")
    evaluated: int = Field(description="Active clients evaluated (those not held by an override).")
    changed: int = Field(description="Clients whose tier changed.")
    held: int = Field(description="Active clients left alone because an override still holds.")
    window_from: datetime
    window_to: datetime


@routes.post("/api/v1/tiers/evaluate")
@endpoint(roles=BANK_STAFF_WRITERS, response=EvaluationResult, tag="points")
async def evaluate_tiers(request: web.Request) -> web.Response:
    """Evaluate every client's tier from its points.

    Each active client gets the highest tier (by rank) whose `min_points` its trailing-twelve-month points reach,
    or no tier when none is reached, unless a manual override (`tier_override_until` in the future) still holds.
    Every change is kept in the tier history; the run is one audit entry with the counts."""
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        result = await evaluation.evaluate_tiers(
            conn, principal_of(request), now, request.config_dict[CONFIG].timezone
        )
    return json_response(result)
