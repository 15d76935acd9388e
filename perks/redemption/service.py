"""Redeeming a voucher exactly once: scan, redeem, void, and the lists a merchant and a client read.

The public face of the capability: the HTTP routes and the merchant portal call these functions and nothing
deeper. Each takes a connection that is not inside a transaction (the function opens its own), the actor, and
the instant to act at (the application's clock), so that tests and the portal decide the same way the API does.

- ``scan``: every check redeeming makes, consuming nothing.
- ``redeem``: one transaction inserts the redemption and moves three counters with conditional updates, in a
  fixed order (client yearly, client monthly, merchant yearly); an ``Idempotency-Key`` replays the first outcome.
- ``void``: gives the quota and capacity back in the redemption's own quota year and month; the voucher stays spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from perks.core.auth import Principal
from perks.core.errors import Refusal
from perks.merchants.service import merchant_usage
from perks.quotas import quota_period
from perks.redemption import checks, counters, idempotency
from perks.redemption.checks import resolve_store
from perks.redemption.idempotency import IDEMPOTENCY_WINDOW, KeyReused, request_fingerprint
from perks.redemption.queries import get_redemption, list_client_redemptions, list_merchant_redemptions
from perks.redemption.voids import VOID_WINDOW, void

if TYPE_CHECKING:
    from perks.core.metrics import Metrics
    from perks.vouchers.keyring import KeyRing

__all__ = [
    "IDEMPOTENCY_WINDOW",
    "VOID_WINDOW",
    "KeyReused",
    "RedeemOutcome",
    "get_redemption",
    "list_client_redemptions",
    "list_merchant_redemptions",
    "merchant_usage",
    "redeem",
    "request_fingerprint",
    "resolve_store",
    "scan",
    "void",
]

@dataclass(frozen=True)
class RedeemOutcome:
    """What a redemption request answers: a fresh 201, or a replay of the key's first answer (any status)."""

    status: int
    body: dict[str, Any]
    replayed: bool


async def scan(
    conn: asyncpg.Connection,
    keyring: KeyRing,
    actor: Principal,
    token: str,
    store_id: UUID | None,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """Every check redeeming would make, at ``now``, consuming nothing; raises the first ``Refusal`` that applies."""
    await resolve_store(conn, actor, store_id)
    claims = checks.verify_token(keyring, token)
    year, month = quota_period(now, tz)
    facts = await checks.facts(conn, claims.jti, UUID(actor.merchant_id), year, month)
    checks.refuse_if_any(facts, claims, now, tz)
    return {
        "voucher_id": facts["voucher_id"],
        "perk": facts["perk_code"],
        "client": checks.client_view(facts["client_name"], facts["tier_code"]),
        "remaining_after": counters.remaining(facts["yearly_quota"], facts["used"] + 1),
        "expires_at": facts["expires_at"],
    }


async def redeem(
    conn: asyncpg.Connection,
    keyring: KeyRing,
    actor: Principal,
    token: str,
    store_id: UUID | None,
    now: datetime,
    tz: ZoneInfo,
    *,
    idempotency_key: str | None = None,
    request_hash: bytes | None = None,
    metrics: Metrics | None = None,
) -> RedeemOutcome:
    """Redeem the voucher at the actor's store, exactly once; a fresh refusal is raised as ``Refusal``.

    With ``idempotency_key`` (and ``request_hash`` from :func:`request_fingerprint`), the first outcome for that
    key at this merchant -- the redemption or its refusal -- is kept for 24 hours and returned again, with
    ``replayed=True``, to a request with the same hash; another hash raises ``KeyReused`` (422). A request
    arriving while the key's first request is still deciding waits for it, then replays it."""
    store = await resolve_store(conn, actor, store_id)
    started = time.perf_counter()
    outcome_label = None
    try:
        if idempotency_key is None:
            async with conn.transaction(isolation=counters.ISOLATION):
                body = await _redeem(conn, keyring, actor, store, token, now, tz)
            outcome = RedeemOutcome(201, body, replayed=False)
        else:
            if request_hash is None:
                raise ValueError("an idempotency key needs the request's hash")
            outcome = await _redeem_once(
                conn, keyring, actor, store, token, now, tz, idempotency_key, request_hash
            )
        outcome_label = "replayed" if outcome.replayed else "redeemed"
        return outcome
    except Refusal as refusal:
        outcome_label = refusal.code
        raise
    except KeyReused:
        outcome_label = "idempotency_key_reused"
        raise
    finally:
        # Only decisions are counted: a request refused for its store or lost to the database is not one.
        if metrics is not None and outcome_label is not None:
            metrics.redemptions.labels(outcome_label).inc()
            metrics.redemption_latency.observe(time.perf_counter() - started)


async def _redeem_once(
    conn: asyncpg.Connection,
    keyring: KeyRing,
    actor: Principal,
    store: UUID,
    token: str,
    now: datetime,
    tz: ZoneInfo,
    key: str,
    request_hash: bytes,
) -> RedeemOutcome:
    # The key's row is claimed first in the transaction, so a concurrent request with the same key waits on it
    # and then replays. Refusals are kept too (Stripe's rule: one key, one outcome); the savepoint lets the key
    # row survive while the redemption and its counters roll back.
    merchant_id = UUID(actor.merchant_id)
    refused: Refusal | None = None
    async with conn.transaction(isolation=counters.ISOLATION):
        stored = await idempotency.claim(conn, merchant_id, key, request_hash, now)
        if stored is not None:
            if stored.request_hash != request_hash:
                raise KeyReused()
            return RedeemOutcome(stored.status, stored.body, replayed=True)
        try:
            async with conn.transaction():
                body = await _redeem(conn, keyring, actor, store, token, now, tz)
        except Refusal as refusal:
            refused = refusal
            await idempotency.record(conn, merchant_id, key, refusal.status, refusal.body())
        else:
            await idempotency.record(conn, merchant_id, key, 201, body)
            return RedeemOutcome(201, body, replayed=False)
    assert refused is not None
    raise refused


async def _redeem(
    conn: asyncpg.Connection,
    keyring: KeyRing,
    actor: Principal,
    store_id: UUID,
    token: str,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The redemption itself; the caller holds the transaction, which a refusal rolls back."""
    claims = checks.verify_token(keyring, token)
    merchant_id = UUID(actor.merchant_id)
    year, month = quota_period(now, tz)
    facts = await checks.facts(conn, claims.jti, merchant_id, year, month)
    # Counters are read here only to refuse early; the conditional updates below are what actually decide.
    checks.refuse_if_any(facts, claims, now, tz)
    redemption_id = await counters.insert_redemption(
        conn, facts, merchant_id, store_id, UUID(actor.id), now, year, month
    )
    await counters.audit_redemption(conn, actor, redemption_id, facts, merchant_id, store_id, now, year, month)
    # Counters last: every terminal of a merchant shares its capacity row, whose lock is then held only from
    # this update to the commit.
    used, merchant_used = await counters.take(conn, facts, merchant_id, year, month)
    return {
        "id": redemption_id,
        "status": "redeemed",
        "voucher_id": facts["voucher_id"],
        "perk": facts["perk_code"],
        "client": checks.client_view(facts["client_name"], facts["tier_code"]),
        "merchant_id": merchant_id,
        "store_id": store_id,
        "redeemed_at": now,
        "client_remaining": counters.remaining(facts["yearly_quota"], used),
        "merchant_remaining": counters.remaining(facts["yearly_capacity"], merchant_used),
    }
