"""The invariants a fault run checks: what clients were told matches the database, and no limit is exceeded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from perks.quotas.invariants import mismatched_counters, over_limits, twice_redeemed

if TYPE_CHECKING:
    from tests.fault_support import Figures


# The counters' invariants are the service's own (perks.quotas.invariants); what is particular to a fault run is
# what the load generator was told: every 201 must be in the database, once.
KNOWN_REDEMPTIONS = "SELECT id::text, voucher_id FROM redemptions WHERE id = ANY($1::uuid[])"


async def broken_invariants(conn: Any, figures: Figures) -> list[str]:
    """Every way the database disagrees with what clients were told, or with the limits (empty: all held)."""
    problems = [f"counter differs: {row}" for row in await mismatched_counters(conn)]
    problems += [f"over its limit: {row}" for row in await over_limits(conn)]
    problems += [f"redeemed twice: {voucher_id}" for voucher_id in await twice_redeemed(conn)]
    stored = {row["id"]: row["voucher_id"] for row in await conn.fetch(KNOWN_REDEMPTIONS, list(figures.redeemed))}
    problems += [f"acknowledged (201) but not in the database: {rid}" for rid in figures.redeemed if rid not in stored]
    problems += [f"201 for another voucher: {rid}" for rid, vid in figures.redeemed.items() if stored.get(rid, vid) != vid]
    problems += [f"voucher {vid} acknowledged as {len(ids)} redemptions"
                 for vid, ids in figures.voucher_ids_by_redemption.items() if len(ids) > 1]
    for key, answers in figures.keyed_answers.items():
        if len({(status, json.dumps(body, sort_keys=True)) for status, body in answers}) > 1:
            problems.append(f"Idempotency-Key {key} answered differently: {[a[0] for a in answers]}")
    return problems
