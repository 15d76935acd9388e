"""Redeeming a voucher exactly once: scan, redeem, void, and the lists a merchant and a client read.

The public face of the capability: the HTTP routes and the merchant portal call these functions and nothing
deeper. Scan and redeem are decided in ONE round trip to the database, by the server-side function
``perks_redeem`` (migrations 0009 and 0011): the acting user's session, the terminal's rate, the store, the idempotency key,
the contract's refusal table in order, the redemption row, the conditional counter moves (tier or grant, then the
merchant's capacity slots), the audit entry, the ``redemption.created`` event and the key's record. Only the
voucher's signature is checked here first (the key ring lives in Python).

- ``scan``: every check redeeming makes, consuming nothing (but a count of the terminal's rate).
- ``redeem``: records the redemption, or a refusal; an ``Idempotency-Key`` replays the first outcome.
- ``void``: gives the use back where it was taken; the voucher stays spent.

The decision relies on READ COMMITTED, PostgreSQL's default: a conditional update that waited for a row lock
re-reads the row's latest version. (Under a stricter level the same races end in serialization errors, never
in a passed limit.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from perks.core.errors import ApiError, BadRequest, Forbidden, NotFound, Refusal, TooManyAttempts, Unauthorized
from perks.quotas import period
from perks.redemption.checks import EXPIRY_LEEWAY, verified_voucher
from perks.redemption.context import Terminal
from perks.redemption.idempotency import IDEMPOTENCY_WINDOW, KeyReused, request_fingerprint
from perks.redemption.queries import get_redemption, list_client_redemptions, list_merchant_redemptions
from perks.redemption.voids import VOID_WINDOW, void

__all__ = [
    "IDEMPOTENCY_WINDOW",
    "VOID_WINDOW",
    "KeyReused",
    "RedeemOutcome",
    "Terminal",
    "get_redemption",
    "list_client_redemptions",
    "list_merchant_redemptions",
    "redeem",
    "request_fingerprint",
    "scan",
    "void",
]

DECIDE = """
SELECT status, code, body, replayed
FROM perks_redeem($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
"""

STORE_PROBLEMS = {
    "store_required": "required: the merchant has several stores",
    "no_store": "the merchant has no store yet",
}
RATE_MESSAGE = "Too many scans or redemptions from this account; try again in a minute."


@dataclass(frozen=True)
class RedeemOutcome:
    """What a redemption request answers: a fresh 201, or a replay of the key's first answer (any status)."""

    status: int
    body: dict[str, Any]
    replayed: bool


async def scan(conn: asyncpg.Connection, terminal: Terminal, token: str) -> dict[str, Any]:
    """Every check redeeming would make, consuming nothing; raises the first refusal that applies."""
    _, code, body, _ = await _decide(conn, terminal, token, None, None, scan=True)
    if code is not None:
        raise _error(code)
    return body


async def redeem(
    conn: asyncpg.Connection,
    terminal: Terminal,
    token: str,
    *,
    idempotency_key: str | None = None,
    request_hash: bytes | None = None,
) -> RedeemOutcome:
    """Redeem the voucher at the terminal's store, exactly once; a fresh refusal is raised as ``Refusal``.

    With ``idempotency_key`` (and ``request_hash`` from :func:`request_fingerprint`), the first outcome for that
    key at this merchant -- the redemption or its refusal -- is kept for 24 hours and returned again, with
    ``replayed=True``, to a request with the same hash; another hash raises ``KeyReused`` (422). A request
    arriving while the key's first request is still deciding waits for it, then replays it."""
    if idempotency_key is not None and request_hash is None:
        raise ValueError("an idempotency key needs the request's hash")
    started = time.perf_counter()
    label = None
    try:
        status, code, body, replayed = await _decide(conn, terminal, token, idempotency_key, request_hash, scan=False)
        if replayed:
            label = "replayed"
            return RedeemOutcome(status, _replayed_body(status, body), replayed=True)
        if code is not None:
            error = _error(code)
            # Only decisions are counted: a request refused for its session, rate or store is not one.
            if isinstance(error, (Refusal, KeyReused)):
                label = code
            raise error
        label = "redeemed"
        return RedeemOutcome(201, body, replayed=False)
    finally:
        if terminal.metrics is not None and label is not None:
            terminal.metrics.redemptions.labels(label).inc()
            terminal.metrics.redemption_latency.observe(time.perf_counter() - started)


async def _decide(
    conn: asyncpg.Connection,
    terminal: Terminal,
    token: str,
    key: str | None,
    request_hash: bytes | None,
    *,
    scan: bool,
) -> tuple[int, str | None, Any, bool]:
    actor = terminal.actor
    if actor.role not in ("manager", "cashier") or not actor.merchant_id:
        raise Forbidden()
    voucher_id, deadline = verified_voucher(terminal.keyring, token)
    at = period(terminal.now, terminal.tz)
    row = await conn.fetchrow(
        DECIDE,
        UUID(actor.id),
        actor.username or f"{actor.role}:{actor.id}",
        actor.role,
        actor.session_generation,
        UUID(actor.merchant_id),
        UUID(actor.store_id) if actor.store_id else None,
        terminal.store_id,
        voucher_id,
        deadline,
        EXPIRY_LEEWAY,
        terminal.now,
        at.year,
        at.month,
        at.today,
        terminal.rate_limit_per_minute,
        key,
        request_hash,
        IDEMPOTENCY_WINDOW,
        scan,
    )
    return row["status"], row["code"], row["body"], row["replayed"]


def _error(code: str) -> ApiError:
    """The error a decision's code stands for."""
    if code in Refusal.STATUS:
        return Refusal(code)
    if code in STORE_PROBLEMS:
        return BadRequest({"store_id": STORE_PROBLEMS[code]})
    errors: dict[str, ApiError] = {
        "unauthorized": Unauthorized(),
        "too_many_attempts": TooManyAttempts(message=RATE_MESSAGE),
        "forbidden": Forbidden(),
        "not_found": NotFound(),
        "idempotency_key_reused": KeyReused(),
    }
    return errors[code]


def _replayed_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    # A refusal is kept as its code alone; told again, it is the same error body as the first time.
    error = body.get("error") if status != 201 else None
    if isinstance(error, dict) and "message" not in error:
        return Refusal(error["code"]).body()
    return body
