"""Client import: a CSV file of the bank's clients, upserted on ``external_ref``, all or nothing."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

import asyncpg
from pydantic import Field, ValidationError

from perks.audit import service as audit
from perks.clients.fields import MAX_TAGS, Birthday, ClientName, ExternalRef, Phone
from perks.clients.service import CLIENT_CONSTRAINTS, EARLIEST_BIRTHDAY
from perks.clients.tiers import record_tier_changes
from perks.core.auth import Principal
from perks.core.batches import Problems
from perks.core.bulk import BULK_TIMEOUT_SECONDS, copy_in_chunks
from perks.core.csvfiles import file_records
from perks.core.errors import BadRequest
from perks.core.fields import CODE_PATTERN, Code
from perks.core.updates import constraint_errors
from perks.core.validation import Body
from perks.events.service import CHANNEL as EVENTS_CHANNEL

REQUIRED_COLUMNS = ("external_ref", "name")
OPTIONAL_COLUMNS = ("phone", "birthday", "tier", "tags")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TAG = re.compile(CODE_PATTERN)


class ClientRow(Body):
    external_ref: ExternalRef
    name: ClientName
    phone: Phone | None = None
    birthday: Birthday | None = None
    tier: Code | None = Field(None, description="A tier's code.")
    tags: str | None = Field(None, description="`;`-separated tags; replaces the client's tags when given.")


# (position, external_ref, name, phone, birthday, tier, tags): a row of the staging table.
Record = tuple[int, str, str, str | None, date | None, str | None, list[str] | None]
STAGE_COLUMNS = ("position", "external_ref", "name", "phone", "birthday", "tier", "tags")


def csv_tags(line: int, cell: str | None, problems: Problems) -> list[str] | None | bool:
    """The tags of a ``tags`` cell (``a;b``; None when empty), or False (and the problem reported)."""
    if cell is None:
        return None
    tags = list(dict.fromkeys(part.strip() for part in cell.split(";") if part.strip()))
    bad = [tag for tag in tags if not _TAG.match(tag)]
    if bad:
        problems.add(line, "tags", "each tag must match [a-z0-9_]{1,32}, separated by ;")
        return False
    if len(tags) > MAX_TAGS:
        problems.add(line, "tags", f"at most {MAX_TAGS} distinct tags")
        return False
    return tags


def csv_client(line: int, cells: Mapping[str, str], today: date, problems: Problems) -> Record | None:
    """One client read from a CSV line, or None (and the line's problems reported). An empty optional cell is
    no value: a new client has none, an existing one keeps its own."""
    data: dict[str, Any] = {
        name: (value if value != "" or name in REQUIRED_COLUMNS else None) for name, value in cells.items()
    }
    bad = False
    birthday = data.get("birthday")
    if birthday is not None and not _DATE.match(birthday):
        problems.add(line, "birthday", "must be a date, YYYY-MM-DD")
        data["birthday"], bad = None, True
    try:
        row = ClientRow.model_validate(data, strict=False)
    except ValidationError as exc:
        problems.add_validation(line, exc)
        return None
    if row.birthday is not None and row.birthday < EARLIEST_BIRTHDAY:
        problems.add(line, "birthday", f"must not be before {EARLIEST_BIRTHDAY.isoformat()}")
        return None
    if row.birthday is not None and row.birthday > today:
        problems.add(line, "birthday", "must not be in the future")
        return None
    tags = csv_tags(line, row.tags, problems)
    if bad or tags is False:
        return None
    return (line, row.external_ref, row.name, row.phone, row.birthday, row.tier, tags)


def read_csv_file(binary: IO[bytes] | Iterable[bytes], today: date, problems: Problems,
                  progress: Callable[[int], Any] | None = None) -> Iterator[Record]:
    """The good clients of a CSV file's bytes (an open file, or its lines), lazily; the header and every bad line
    go to ``problems``. ``progress(n)`` hears of each line's bytes. The API, the console and ``perks clients
    import`` all read a file this way."""
    return file_records(binary, problems, lambda line, cells: csv_client(line, cells, today, problems),
                        required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS, progress=progress)


CREATE_STAGE = """
CREATE TEMPORARY TABLE client_stage (
    position integer NOT NULL, external_ref text NOT NULL, name text NOT NULL, phone text, birthday date, tier text,
    tags text[]
) ON COMMIT DROP
"""
STAGE_PROBLEMS = """
SELECT s.position FROM client_stage s
WHERE s.tier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tiers t WHERE t.code = s.tier)
ORDER BY s.position
"""
REPEATED_REFS = """
SELECT array_agg(position ORDER BY position) AS positions FROM client_stage GROUP BY external_ref HAVING count(*) > 1
"""
# The clients the file changes, as they were: locked, so that the audit's "before" is what was replaced.
CAPTURE_BEFORE = """
CREATE TEMPORARY TABLE import_before ON COMMIT DROP AS
SELECT c.id, c.external_ref, c.name, c.phone, c.birthday, c.tier_code, c.status, c.created_at, c.updated_at,
       c.tier_override_until, c.tags
FROM clients c WHERE false
"""
LOCK_BEFORE = """
INSERT INTO import_before
SELECT c.id, c.external_ref, c.name, c.phone, c.birthday, c.tier_code, c.status, c.created_at, c.updated_at,
       c.tier_override_until, c.tags
FROM clients c JOIN client_stage s ON s.external_ref = c.external_ref
FOR NO KEY UPDATE OF c
"""
# An empty tags cell keeps a client's tags (a new client has none): resolved here, set-based, so that the upsert
# can simply take the staged tags.
KEEP_TAGS = """
UPDATE client_stage s SET tags = b.tags::text[] FROM import_before b
WHERE b.external_ref = s.external_ref AND s.tags IS NULL
"""
NO_TAGS = "UPDATE client_stage SET tags = '{}' WHERE tags IS NULL"
NOTIFY_EVENTS = "SELECT pg_notify($1, '')"
# What the upsert did to each client it created or changed: the audit entries and the tier history are written
# from here, set-based.
CREATE_CHANGED = """
CREATE TEMPORARY TABLE import_changed (
    id uuid NOT NULL, external_ref text NOT NULL, created boolean NOT NULL, from_tier text, to_tier text,
    before jsonb, after jsonb NOT NULL
) ON COMMIT DROP
"""
# The JSON is the API's client view, spelled as the API spells it.
UPSERT = """
WITH upserted AS (
    INSERT INTO clients AS c (external_ref, name, phone, birthday, tier_code, tags)
    SELECT external_ref, name, phone, birthday, tier, tags::code[] FROM client_stage ORDER BY position
    ON CONFLICT (external_ref) DO UPDATE SET
        name = EXCLUDED.name,
        phone = COALESCE(EXCLUDED.phone, c.phone),
        birthday = COALESCE(EXCLUDED.birthday, c.birthday),
        tier_code = COALESCE(EXCLUDED.tier_code, c.tier_code),
        tags = EXCLUDED.tags,
        updated_at = now()
    WHERE (c.name, c.phone, c.birthday, c.tier_code, c.tags) IS DISTINCT FROM
          (EXCLUDED.name, COALESCE(EXCLUDED.phone, c.phone), COALESCE(EXCLUDED.birthday, c.birthday),
           COALESCE(EXCLUDED.tier_code, c.tier_code), EXCLUDED.tags)
    RETURNING c.id, c.external_ref, c.name, c.phone, c.birthday, c.tier_code, c.status, c.created_at, c.updated_at,
              c.tier_override_until, c.tags, (c.xmax = 0) AS created
)
INSERT INTO import_changed (id, external_ref, created, from_tier, to_tier, before, after)
SELECT u.id, u.external_ref, u.created, b.tier_code, u.tier_code,
       CASE WHEN b.id IS NULL THEN NULL ELSE jsonb_build_object(
           'id', b.id::text, 'external_ref', b.external_ref, 'name', b.name, 'phone', b.phone,
           'birthday', b.birthday, 'tier', b.tier_code, 'status', b.status, 'created_at', iso_utc(b.created_at),
           'updated_at', iso_utc(b.updated_at),
           'tier_override_until', iso_utc(b.tier_override_until), 'tags', to_jsonb(b.tags::text[])) END,
       jsonb_build_object(
           'id', u.id::text, 'external_ref', u.external_ref, 'name', u.name, 'phone', u.phone,
           'birthday', u.birthday, 'tier', u.tier_code, 'status', u.status, 'created_at', iso_utc(u.created_at),
           'updated_at', iso_utc(u.updated_at),
           'tier_override_until', iso_utc(u.tier_override_until), 'tags', to_jsonb(u.tags::text[]))
FROM upserted u LEFT JOIN import_before b ON b.id = u.id
"""
AUDITED = """
SELECT CASE WHEN created THEN 'client.create' ELSE 'client.update' END AS action, 'client' AS entity_type,
       id::text AS entity_id, before, after
FROM import_changed
"""
# Only clients that were there before have a tier that moved.
TIER_MOVES = "SELECT id AS client_id, from_tier, to_tier FROM import_changed WHERE NOT created"
TIER_EVENTS = """
INSERT INTO events (type, occurred_at, data)
SELECT 'client.tier_changed', $1, jsonb_build_object(
           'client_id', id::text, 'from_tier', from_tier, 'to_tier', to_tier, 'cause', 'manual')
FROM import_changed
WHERE NOT created AND to_tier IS DISTINCT FROM from_tier
ORDER BY external_ref
"""
COUNT_CHANGED = """
SELECT count(*) FILTER (WHERE created) AS created, count(*) FILTER (WHERE NOT created) AS updated FROM import_changed
"""


async def import_clients(
    conn: asyncpg.Connection,
    actor: Principal,
    records: Iterable[Record],
    problems: Problems,
    *,
    now: datetime,
    on_copied: Callable[[int], Any] | None = None,
    on_phase: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Create or update clients by ``external_ref``, all or none: ``{received, created, updated, unchanged}``.

    ``records`` may be a lazy reader reporting bad rows into ``problems``; any problem (including an unknown tier
    or an ``external_ref`` twice in the file) refuses the whole file with every bad line named. Each created or
    changed client is audited like ``POST /clients`` and ``PATCH /clients/{id}``; a tier moved by the import is
    recorded in the tier history (reason ``import``) and as a ``client.tier_changed`` event (cause ``manual``).
    ``on_copied(n)`` and ``on_phase(name)`` report progress."""
    phase = on_phase or (lambda name: None)
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '128MB'")
        await conn.execute(CREATE_STAGE)
        received = await copy_in_chunks(conn, "client_stage", STAGE_COLUMNS, records, on_copied)
        phase("checking")
        for row in await conn.fetch(STAGE_PROBLEMS, timeout=BULK_TIMEOUT_SECONDS):
            problems.add(row["position"], "tier", "no such tier")
        repeated = await conn.fetch(REPEATED_REFS, timeout=BULK_TIMEOUT_SECONDS)
        problems.add_repeats((row["positions"] for row in repeated), "external_ref")
        if problems:
            raise problems.rejection()
        if received == 0:
            raise BadRequest({"body": "no clients: the file has a header and no lines"})
        phase("applying")
        await conn.execute(CAPTURE_BEFORE)
        await conn.execute(LOCK_BEFORE, timeout=BULK_TIMEOUT_SECONDS)
        await conn.execute(KEEP_TAGS, timeout=BULK_TIMEOUT_SECONDS)
        await conn.execute(NO_TAGS, timeout=BULK_TIMEOUT_SECONDS)
        await conn.execute(CREATE_CHANGED)
        with constraint_errors(CLIENT_CONSTRAINTS):
            await conn.execute(UPSERT, timeout=BULK_TIMEOUT_SECONDS)
        await audit.record_selected(conn, actor, AUDITED, timeout=BULK_TIMEOUT_SECONDS)
        await record_tier_changes(
            conn, actor, TIER_MOVES, reason="import", changed_at=now, timeout=BULK_TIMEOUT_SECONDS
        )
        await conn.execute(TIER_EVENTS, now, timeout=BULK_TIMEOUT_SECONDS)
        row = await conn.fetchrow(COUNT_CHANGED, timeout=BULK_TIMEOUT_SECONDS)
        await conn.execute(NOTIFY_EVENTS, EVENTS_CHANNEL)
    return {
        "received": received,
        "created": row["created"],
        "updated": row["updated"],
        "unchanged": received - row["created"] - row["updated"],
    }
