"""Tiers earned by points: evaluation of every client in one set-based pass.

A tier set by hand (an override, a plain change) and the tier history are the clients' own
(:mod:`perks.clients.tiers`); they are named here too, beside the evaluation they hold against."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any
from uuid import uuid4

import asyncpg

from perks.audit import service as audit
from perks.clients.tiers import clear_tier_override, record_tier_change, set_tier_override, tier_history
from perks.core.auth import Principal
from perks.points.window import points_window

__all__ = [
    "evaluate_tiers", "clear_tier_override", "record_tier_change", "set_tier_override", "tier_history",
]

# Any constant works; it only has to be the same for every process that evaluates this database.
EVALUATION_LOCK_ID = 7_265_733_210_008
# The pool's 30-second command timeout suits requests, not a first run that moves a million clients.
EVALUATION_TIMEOUT_SECONDS = 600

# One statement decides and applies every change, so that a million clients take seconds, not a loop's hours.
# The ladder maps points to a tier in one array lookup: for each distinct min_points, the best (highest-rank) tier
# whose min_points is at or below it; width_bucket finds the last threshold a client's points reach.
# Optimistic about concurrency: the update re-checks its conditions on the row as it is when it writes (a client
# just blocked, held or given another tier by someone else is skipped; the next run sees it), so that the history's
# from_tier is always the tier actually replaced, without locking a million rows first.
# Rows are reached by their physical address, in physical order, and history rows written in client order: with
# a million changes, that locality is most of the difference between seconds and minutes.
# Each change also leaves a ``client.tier_changed`` event in the outbox, in the same statement and transaction.
# The ladder keeps the tiers' codes in their ``code`` domain: a text value stored into a ``code`` column is checked
# against the domain's regular expression again, once for each client and column, which was a quarter of a first
# run over a million clients.
EVALUATE = """
WITH earned AS (
    SELECT client_id, sum(points) AS points FROM points_events
    WHERE occurred_at > $1 AND occurred_at <= $2
    GROUP BY client_id
),
ladder AS MATERIALIZED (
    SELECT array_agg(m.min_points ORDER BY m.min_points) AS thresholds,
           array_agg(best.code ORDER BY m.min_points) AS tiers
    FROM (SELECT DISTINCT min_points FROM tiers) m
    CROSS JOIN LATERAL (
        SELECT t.code FROM tiers t WHERE t.min_points <= m.min_points ORDER BY t.rank DESC LIMIT 1
    ) best
),
evaluated AS (
    SELECT c.ctid AS row_at, c.id, c.tier_code, COALESCE(e.points, 0) AS points
    FROM clients c LEFT JOIN earned e ON e.client_id = c.id
    WHERE c.status = 'active' AND (c.tier_override_until IS NULL OR c.tier_override_until <= $2)
),
decided AS MATERIALIZED (
    SELECT row_at, id, from_tier, points, to_tier FROM (
        SELECT v.row_at, v.id, v.tier_code AS from_tier, v.points,
               l.tiers[width_bucket(v.points, l.thresholds)] AS to_tier
        FROM evaluated v CROSS JOIN ladder l
    ) moves
    WHERE to_tier IS DISTINCT FROM from_tier
    ORDER BY row_at
),
changed AS (
    UPDATE clients c SET tier_code = d.to_tier, updated_at = now()
    FROM decided d
    WHERE c.ctid = d.row_at AND c.id = d.id AND c.tier_code IS NOT DISTINCT FROM d.from_tier
      AND c.status = 'active' AND (c.tier_override_until IS NULL OR c.tier_override_until <= $2)
    RETURNING c.id, d.from_tier, d.to_tier, d.points
),
history AS (
    INSERT INTO tier_history (client_id, from_tier, to_tier, reason, points, changed_at, actor_id, actor_username,
                              actor_role)
    SELECT id, from_tier, to_tier, 'evaluation', points, $2, $3, $4, $5 FROM changed ORDER BY id
),
outbox AS (
    INSERT INTO events (type, occurred_at, data)
    SELECT 'client.tier_changed', $2,
           jsonb_build_object('client_id', id::text, 'from_tier', from_tier, 'to_tier', to_tier, 'cause', 'evaluation')
    FROM changed ORDER BY id
)
SELECT (SELECT count(*) FROM evaluated) AS evaluated,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM clients WHERE status = 'active' AND tier_override_until > $2) AS held
"""


async def evaluate_tiers(
    conn: asyncpg.Connection, actor: Principal, now: datetime, tz: tzinfo = timezone.utc
) -> dict[str, Any]:
    """Give each active client the highest tier (by rank) whose ``min_points`` its trailing-twelve-month points
    reach (no tier when none is reached), unless a manual override still holds. One audit entry for the run, and
    one ``client.tier_changed`` event (``cause: "evaluation"``) per client whose tier changed.

    Returns ``{id, evaluated, changed, held, window_from, window_to}``: ``evaluated`` counts the active clients
    not held by an override, ``held`` those that are."""
    window_from, window_to = points_window(now, tz)
    run_id = uuid4()
    async with conn.transaction():
        # Two runs at once would only race each other to the same answer; the second waits and finds nothing to do.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", EVALUATION_LOCK_ID)
        await conn.execute("SET LOCAL work_mem = '256MB'")
        row = await conn.fetchrow(
            EVALUATE, window_from, window_to, *audit.actor_columns(actor), timeout=EVALUATION_TIMEOUT_SECONDS
        )
        result = {
            "id": str(run_id),
            "evaluated": row["evaluated"],
            "changed": row["changed"],
            "held": row["held"],
            "window_from": window_from,
            "window_to": window_to,
        }
        await audit.record(conn, actor, "tier.evaluate", "tier_evaluation", run_id, None, result)
    return result
