"""Contribution events: ingested in batches (a JSON list or a CSV file), idempotent on ``event_ref``, all or
nothing; and a client's points, those earned in the trailing twelve months."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone, tzinfo
from typing import IO, Annotated, Any, Callable, Iterable, Iterator, Mapping
from uuid import UUID, uuid4

import asyncpg
from pydantic import AwareDatetime, Field, ValidationError

from perks.audit import service as audit
from perks.clients.fields import ExternalRef
from perks.core.auth import Principal
from perks.core.batches import Problems
from perks.core.bulk import BULK_TIMEOUT_SECONDS, copy_in_chunks
from perks.core.csvfiles import file_records
from perks.core.errors import BadRequest, NotFound
from perks.core.fields import Code
from perks.core.validation import Body, field_errors
from perks.points.window import points_window

EVENT_COLUMNS = ("event_ref", "client_external_ref", "source", "amount_fen", "occurred_at")
MAX_EVENTS_PER_REQUEST = 10_000
MAX_AMOUNT_FEN = 10**14  # a trillion yuan: far beyond any one contribution, and points still fit a bigint

_DIGITS = re.compile(r"^[0-9]{1,15}$")
# pydantic would also take a bare number as a Unix time; a file must say the time the way people read it.
_RFC3339_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")

EventRef = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[!-~]+$",
          description="The sending system's unique reference of the event: printable ASCII, no spaces."),
]


class EventIn(Body):
    event_ref: EventRef
    client_external_ref: ExternalRef
    source: Code = Field(description="A source with a points rule (`deposit`, `wealth`, `insurance`, ...).")
    amount_fen: int = Field(ge=0, le=MAX_AMOUNT_FEN)
    occurred_at: AwareDatetime = Field(description="RFC 3339 with offset; not in the future.")


class EventBatch(Body):
    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_REQUEST, description="1 to 10,000 events.")


# (position, event_ref, client_external_ref, source, amount_fen, occurred_at): a row of the staging table.
Record = tuple[int, str, str, str, int, datetime]
STAGE_COLUMNS = ("position", "event_ref", "client_ref", "source", "amount_fen", "occurred_at")


def _record(position: int, event: EventIn, now: datetime, problems: Problems) -> Record | None:
    if event.occurred_at > now:
        problems.add(position, "occurred_at", "must not be in the future")
        return None
    return (position, event.event_ref, event.client_external_ref, event.source, event.amount_fen, event.occurred_at)


def json_records(raw: bytes, now: datetime, problems: Problems) -> list[Record]:
    """The events of a JSON body ``{"events": [...]}``; a bad event is reported by its index in ``problems``,
    a bad body as a whole is a plain 400."""
    try:
        batch = EventBatch.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        in_items = [e for e in errors if len(e["loc"]) >= 2 and isinstance(e["loc"][1], int)]
        if len(in_items) != len(errors):
            raise BadRequest(field_errors(exc)) from None
        for error in in_items:
            field = ".".join(str(part) for part in error["loc"][2:]) or "event"
            reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            problems.add(int(error["loc"][1]), field, reason)
        # The good events are still checked against the database, so that one answer names every bad one.
        bad = {int(error["loc"][1]) for error in in_items}
        items = json.loads(raw)["events"]
        good = [(i, EventIn.model_validate_json(json.dumps(item))) for i, item in enumerate(items) if i not in bad]
        return [record for i, event in good if (record := _record(i, event, now, problems)) is not None]
    if not batch.events:
        raise BadRequest({"events": "at least one event is required"})
    records = (_record(index, event, now, problems) for index, event in enumerate(batch.events))
    return [record for record in records if record is not None]


# A line whose cells all match these certainly passes EventIn, so it skips pydantic (most of a big file's cost);
# any other line takes the full validation, which then says exactly what is wrong with it.
_PRINTABLE_64 = re.compile(r"[!-~]{1,64}")
_CODE = re.compile(r"[a-z0-9_]{1,32}")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def _plain_record(line: int, cells: Mapping[str, str], now: datetime) -> Record | None:
    """The record of a line that is plainly good, or None when it needs the full validation."""
    ref, client_ref, source, amount, at = (cells[column] for column in EVENT_COLUMNS)
    if not (_PRINTABLE_64.fullmatch(ref) and _PRINTABLE_64.fullmatch(client_ref) and _CODE.fullmatch(source)
            and _DIGITS.fullmatch(amount) and _RFC3339.fullmatch(at)):
        return None
    amount_fen = int(amount)
    try:
        occurred_at = datetime.fromisoformat(at)
    except ValueError:
        return None
    if amount_fen > MAX_AMOUNT_FEN or occurred_at > now:
        return None
    return (line, ref, client_ref, source, amount_fen, occurred_at)


def csv_event(line: int, cells: Mapping[str, str], now: datetime, problems: Problems) -> Record | None:
    """One event read from a CSV line, or None (and the line's problems reported)."""
    plain = _plain_record(line, cells, now)
    if plain is not None:
        return plain
    data: dict[str, Any] = dict(cells)
    bad = False
    if _DIGITS.match(cells["amount_fen"]):
        data["amount_fen"] = int(cells["amount_fen"])
    else:
        problems.add(line, "amount_fen", "must be a whole number of fen, digits only")
        data["amount_fen"], bad = 0, True
    if not _RFC3339_START.match(cells["occurred_at"]):
        problems.add(line, "occurred_at", "must be an RFC 3339 time with offset, e.g. 2024-05-01T09:30:00+08:00")
        data["occurred_at"], bad = now, True
    try:
        event = EventIn.model_validate(data, strict=False)
    except ValidationError as exc:
        problems.add_validation(line, exc)
        return None
    return None if bad else _record(line, event, now, problems)


def read_csv_file(binary: IO[bytes] | Iterable[bytes], now: datetime, problems: Problems,
                  progress: Callable[[int], Any] | None = None) -> Iterator[Record]:
    """The good events of a CSV file's bytes (an open file, or its lines), lazily; the header and every bad line
    go to ``problems``. ``progress(n)`` hears of each line's bytes. The console and ``perks points import`` both
    read a file this way."""
    return file_records(binary, problems, lambda line, cells: csv_event(line, cells, now, problems),
                        required=EVENT_COLUMNS, progress=progress)


CREATE_STAGE = """
CREATE TEMPORARY TABLE points_stage (
    position integer NOT NULL, event_ref text NOT NULL, client_ref text NOT NULL, source text NOT NULL,
    amount_fen bigint NOT NULL, occurred_at timestamptz NOT NULL
) ON COMMIT DROP
"""
STAGE_PROBLEMS = """
SELECT s.position, 'client_external_ref' AS field, 'no client has this external_ref' AS reason
FROM points_stage s WHERE NOT EXISTS (SELECT 1 FROM clients c WHERE c.external_ref = s.client_ref)
UNION ALL
SELECT s.position, 'source', 'no points rule for this source'
FROM points_stage s WHERE NOT EXISTS (SELECT 1 FROM points_rules r WHERE r.source = s.source)
ORDER BY 1
"""
REPEATED_REFS = """
SELECT positions FROM (
    SELECT array_agg(position ORDER BY position) AS positions FROM points_stage GROUP BY event_ref HAVING count(*) > 1
) repeated
"""
# A batch of new events, the usual case, is tried first without the checks: every staged row inserted means none
# named an unknown client or source, none repeated a reference and none was recorded before (the primary key would
# have refused it). Any doubt rolls it back, and the checks below name every bad row. In the order of the
# per-client index: a million new rows then touch each of its pages once, not at random.
INSERT_NEW_EVENTS = """
    INSERT INTO points_events (event_ref, client_id, source, amount_fen, points, occurred_at, batch_id, ingested_at)
    SELECT s.event_ref, c.id, r.source, s.amount_fen, floor(s.amount_fen * r.points_per_yuan / 100)::bigint,
           s.occurred_at, $1, $2
    FROM points_stage s
    JOIN clients c ON c.external_ref = s.client_ref
    JOIN points_rules r ON r.source = s.source
    ORDER BY c.id, s.occurred_at
"""
# After the checks: the new events of a batch that may hold replays.
INSERT_EVENTS = f"""
WITH inserted AS ({INSERT_NEW_EVENTS}    ON CONFLICT (event_ref) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""


class _NotAllNew(Exception):
    """The batch is not plainly new: its checks decide."""


# An event_ref already recorded with other data is a mistake of the sender, not a replay. Checked before inserting
# (so that one answer names every bad event) and, only if a concurrent batch slipped in between, after.
KNOWN_EVENTS = """
SELECT count(*) FILTER (WHERE NOT conflicting) AS same,
       array_agg(position ORDER BY position) FILTER (WHERE conflicting) AS conflicting
FROM (
    SELECT s.position, (e.client_id, e.source::text, e.amount_fen, e.occurred_at)
                       IS DISTINCT FROM (c.id, s.source, s.amount_fen, s.occurred_at) AS conflicting
    FROM points_stage s
    JOIN points_events e ON e.event_ref = s.event_ref
    LEFT JOIN clients c ON c.external_ref = s.client_ref
    WHERE e.batch_id <> $1
) known
"""


async def _known_events(conn: asyncpg.Connection, batch_id: UUID, problems: Problems) -> int:
    """How many staged events are already recorded with the same data; those recorded with other data are problems."""
    row = await conn.fetchrow(KNOWN_EVENTS, batch_id, timeout=BULK_TIMEOUT_SECONDS)
    for position in row["conflicting"] or ():
        problems.add(position, "event_ref", "already recorded with another client, source, amount or time")
    return row["same"]


async def _insert_plainly_new(conn: asyncpg.Connection, batch_id: UUID, now: datetime, received: int,
                              problems: Problems, phase: Callable[[str], Any]) -> int | None:
    """Insert the staged batch if every row of it is new and good (the count); None, with nothing written, if not."""
    if problems or received == 0:
        return None
    phase("applying")
    try:
        async with conn.transaction():  # a savepoint
            status = await conn.execute(INSERT_NEW_EVENTS, batch_id, now, timeout=BULK_TIMEOUT_SECONDS)
            if int(status.split()[-1]) != received:
                raise _NotAllNew()
    except (asyncpg.UniqueViolationError, _NotAllNew):
        return None
    return received


async def _insert_checked(conn: asyncpg.Connection, batch_id: UUID, now: datetime, received: int,
                          problems: Problems, phase: Callable[[str], Any]) -> int:
    """Check the staged batch against the database, refusing it with every bad row named; insert what is new."""
    phase("checking")
    for row in await conn.fetch(STAGE_PROBLEMS, timeout=BULK_TIMEOUT_SECONDS):
        problems.add(row["position"], row["field"], row["reason"])
    repeated = await conn.fetch(REPEATED_REFS, timeout=BULK_TIMEOUT_SECONDS)
    problems.add_repeats((row["positions"] for row in repeated), "event_ref")
    known = await _known_events(conn, batch_id, problems)
    if problems:
        raise problems.rejection()
    if received == 0:
        raise BadRequest({"events": "at least one event is required"})
    phase("applying")
    new = await conn.fetchval(INSERT_EVENTS, batch_id, now, timeout=BULK_TIMEOUT_SECONDS)
    if new + known != received:
        await _known_events(conn, batch_id, problems)
        if problems:
            raise problems.rejection()
    return new


async def ingest_events(
    conn: asyncpg.Connection,
    actor: Principal,
    records: Iterable[Record],
    problems: Problems,
    *,
    now: datetime,
    origin: str,
    on_copied: Callable[[int], Any] | None = None,
    on_phase: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Apply a batch of events, all or none: ``{batch_id, received, new, known}``.

    ``records`` may be a lazy reader that reports bad rows into ``problems`` as it goes; any problem, from it or
    from the checks against the database (unknown client, source without a rule, an ``event_ref`` repeated in the
    batch or already recorded with other data), refuses the whole batch with every bad row named. An event
    already recorded with the same data is a replay and changes nothing. ``on_copied(n)`` and ``on_phase(name)``
    report progress (``applying`` for a batch of plainly new events; ``checking`` first for any other)."""
    phase = on_phase or (lambda name: None)
    batch_id = uuid4()
    async with conn.transaction():
        # Large files join and group millions of staged rows: let that happen in memory.
        await conn.execute("SET LOCAL work_mem = '128MB'")
        await conn.execute(CREATE_STAGE)
        received = await copy_in_chunks(conn, "points_stage", STAGE_COLUMNS, records, on_copied)
        new = await _insert_plainly_new(conn, batch_id, now, received, problems, phase)
        if new is None:
            new = await _insert_checked(conn, batch_id, now, received, problems, phase)
        result = {"batch_id": str(batch_id), "received": received, "new": new, "known": received - new}
        if new:
            after = result | {"origin": origin}
            await audit.record(conn, actor, "points.ingest", "points_batch", batch_id, None, after)
    return result


# A client's points ----------------------------------------------------------------------------------------------


CLIENT_EXISTS = "SELECT 1 FROM clients WHERE id = $1"
SELECT_CLIENT_POINTS = """
SELECT source, sum(points)::bigint AS points FROM points_events
WHERE client_id = $1 AND occurred_at > $2 AND occurred_at <= $3
GROUP BY source ORDER BY source
"""


async def client_points(
    conn: asyncpg.Connection, client_id: UUID, now: datetime, tz: tzinfo = timezone.utc
) -> dict[str, Any]:
    """A client's points earned in the trailing twelve months, in all and by source; 404 for no such client."""
    if await conn.fetchval(CLIENT_EXISTS, client_id) is None:
        raise NotFound()
    window_from, window_to = points_window(now, tz)
    rows = await conn.fetch(SELECT_CLIENT_POINTS, client_id, window_from, window_to)
    by_source = {row["source"]: row["points"] for row in rows}
    return {
        "client_id": str(client_id),
        "points": sum(by_source.values()),
        "window_from": window_from,
        "window_to": window_to,
        "by_source": by_source,
    }
