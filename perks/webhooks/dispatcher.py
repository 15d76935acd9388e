"""The dispatcher every worker runs: delivers each event once per subscription, in event order, signed.

Workers share nothing but the database. A worker claims a subscription (its row locked ``FOR UPDATE SKIP LOCKED``,
so no two claim it at once), takes the events that became final since the subscription's cursor into pending
deliveries, and, if the subscription's first pending delivery is due, leases the subscription and commits. The HTTP
call happens with no transaction open; its result is written under the lease, which then ends. One delivery in
flight per subscription, always its oldest pending one: a failing delivery holds back the later ones until it is
delivered or, 24 h after its first attempt, fails for good. A worker that dies mid-call leaves a lease that expires;
the next worker then sends that delivery again (the one case a receiver sees an event twice: dedupe on
``Perks-Event-Id``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator
from uuid import UUID, uuid4

import aiohttp
import asyncpg
from aiohttp import web

from perks.core.appkeys import CONFIG, POOL
from perks.core.background import running
from perks.core.config import Config
from perks.core.db import UNAVAILABLE_ERRORS, init_connection, resolve_database_url
from perks.core.jsonutil import dumps
from perks.events.service import CHANNEL, HORIZON, event_view
from perks.webhooks.signing import SecretDecryptionError, decrypt_secret, signature

log = logging.getLogger(__name__)

LISTENER_APPLICATION_NAME = "perks-webhooks"
USER_AGENT = "perks-webhooks/1"
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher paces itself; every value can be set in ``Config.extra`` (tests compress time)."""

    poll_seconds: float = 5.0
    timeout_seconds: float = 10.0
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 3600.0
    give_up_seconds: float = 24 * 3600.0
    lease_margin_seconds: float = 30.0
    batch: int = 500
    enabled: bool = True

    @classmethod
    def from_config(cls, config: Config) -> "DispatchSettings":
        """Settings from ``config.extra`` keys ``webhook_<field>`` (``webhook_enabled``: ``0`` turns it off)."""
        extra, values = config.extra, {}
        for name in ("poll_seconds", "timeout_seconds", "backoff_base_seconds", "backoff_max_seconds",
                     "give_up_seconds", "lease_margin_seconds"):
            if f"webhook_{name}" in extra:
                values[name] = float(extra[f"webhook_{name}"])
        if "webhook_batch" in extra:
            values["batch"] = int(extra["webhook_batch"])
        if "webhook_enabled" in extra:
            values["enabled"] = extra["webhook_enabled"].lower() not in ("0", "false", "no")
        return cls(**values)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failures: exponential, capped, half of it jitter."""
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** max(0, attempts - 1))
        return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True)
class Claim:
    """A leased subscription and the delivery to send now."""

    webhook_id: UUID
    lease_token: UUID
    delivery_id: UUID
    url: str
    secret: str
    event: dict[str, Any]
    attempt: int


CLOCK_NOW = "SELECT clock_timestamp()"
SELECT_CANDIDATES = """
SELECT id FROM webhooks
WHERE status = 'active' AND (lease_until IS NULL OR lease_until < clock_timestamp())
ORDER BY id
"""
CLAIM_WEBHOOK = """
SELECT id, url, event_types, secret_encrypted, cursor_tx, cursor_id FROM webhooks
WHERE id = $1 AND status = 'active' AND (lease_until IS NULL OR lease_until < clock_timestamp())
FOR NO KEY UPDATE SKIP LOCKED
"""
# Takes the next final events after the cursor into deliveries (those of the subscription's types) and answers the
# last event looked at, which becomes the new cursor.
TAKE_EVENTS = """
WITH """ + HORIZON + """,
     taken AS (
         SELECT e.id, e.tx, e.type FROM events e, horizon
         WHERE e.tx < horizon.xmin AND (e.tx, e.id) > ($2::xid8, $3::bigint)
         ORDER BY e.tx, e.id LIMIT $5),
     inserted AS (
         INSERT INTO webhook_deliveries (webhook_id, event_id, event_tx, next_attempt_at, created_at)
         SELECT $1, id, tx, $6, $6 FROM taken WHERE type = ANY($4::text[])
         ON CONFLICT (webhook_id, event_id) DO NOTHING)
SELECT tx, id FROM taken ORDER BY tx DESC, id DESC LIMIT 1
"""
MOVE_CURSOR = "UPDATE webhooks SET cursor_tx = $2, cursor_id = $3 WHERE id = $1"
SELECT_HEAD = """
SELECT d.id, d.next_attempt_at, e.id AS event_id, e.type, e.occurred_at, e.data
FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
WHERE d.webhook_id = $1 AND d.status = 'pending'
ORDER BY d.event_tx, d.event_id LIMIT 1
"""
TAKE_LEASE = """
UPDATE webhooks SET lease_until = $2::timestamptz + make_interval(secs => $3), lease_token = $4 WHERE id = $1
"""
START_ATTEMPT = """
UPDATE webhook_deliveries SET attempts = attempts + 1, retry_since = COALESCE(retry_since, $2) WHERE id = $1
RETURNING attempts
"""
END_LEASE = """
UPDATE webhooks SET lease_until = NULL, lease_token = NULL WHERE id = $1 AND lease_token = $2 RETURNING id
"""
MARK_DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', last_status = $2, last_error = NULL, delivered_at = $3
WHERE id = $1 AND status = 'pending'
"""
# Failed for good once retries have gone on for give_up seconds; else due again after the backoff.
MARK_ATTEMPT_FAILED = """
UPDATE webhook_deliveries
SET last_status = $2, last_error = $3,
    status = CASE WHEN $4::timestamptz >= retry_since + make_interval(secs => $5) THEN 'failed' ELSE 'pending' END,
    next_attempt_at = $4::timestamptz + make_interval(secs => $6)
WHERE id = $1 AND status = 'pending'
RETURNING status
"""
NEXT_DUE = """
SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND w.status = 'active'
"""


class Dispatcher:
    """Delivers events to subscriptions until cancelled; woken by NOTIFY on the events channel and by a poll."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, server_secret: str, settings: DispatchSettings) -> None:
        self._pool = pool
        self._url = database_url
        self._server_secret = server_secret
        self.settings = settings
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self.attempts_made = 0  # HTTP attempts this worker has made (for tests and logs)

    async def run(self) -> None:
        """Listen and deliver until cancelled."""
        listener = asyncio.create_task(self._listen(), name="perks-webhooks-listener")
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
            headers={"User-Agent": USER_AGENT},
        )
        try:
            while True:
                try:
                    busy = await self.deliver_due()
                    wait = 0.0 if busy else await self._seconds_to_next_due()
                except UNAVAILABLE_ERRORS as exc:
                    log.warning("webhooks: database unavailable (%s); retrying", type(exc).__name__)
                    wait = self.settings.poll_seconds
                except Exception:
                    log.exception("webhooks: unexpected error while dispatching")
                    wait = self.settings.poll_seconds
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._http.close()

    def wake(self) -> None:
        """Look for work now (a new event, a resumed subscription, a retry)."""
        self._wake.set()

    async def deliver_due(self) -> bool:
        """One pass: send the due delivery of every subscription no other worker holds; whether any was sent."""
        async with self._pool.acquire() as conn:
            candidates = [row["id"] for row in await conn.fetch(SELECT_CANDIDATES)]
            claims = []
            for webhook_id in candidates:
                claim = await self._claim(conn, webhook_id)
                if claim is not None:
                    claims.append(claim)
        if claims:
            await asyncio.gather(*(self._deliver(claim) for claim in claims))
        return bool(claims)

    async def _seconds_to_next_due(self) -> float:
        async with self._pool.acquire() as conn:
            now, due = await conn.fetchval(CLOCK_NOW), await conn.fetchval(NEXT_DUE)
        if due is None:
            return self.settings.poll_seconds
        return max(0.0, min(self.settings.poll_seconds, (due - now).total_seconds()))

    async def _claim(self, conn: asyncpg.Connection, webhook_id: UUID) -> Claim | None:
        async with conn.transaction():
            row = await conn.fetchrow(CLAIM_WEBHOOK, webhook_id)
            if row is None:
                return None
            now: datetime = await conn.fetchval(CLOCK_NOW)
            last = await conn.fetchrow(
                TAKE_EVENTS, webhook_id, row["cursor_tx"], row["cursor_id"], list(row["event_types"]),
                self.settings.batch, now,
            )
            if last is not None:
                await conn.execute(MOVE_CURSOR, webhook_id, last["tx"], last["id"])
            head = await conn.fetchrow(SELECT_HEAD, webhook_id)
            if head is None or head["next_attempt_at"] > now:
                return None
            try:
                secret = decrypt_secret(self._server_secret, webhook_id, row["secret_encrypted"])
            except SecretDecryptionError as exc:
                log.error("%s", exc)
                return None
            token = uuid4()
            lease = self.settings.timeout_seconds + self.settings.lease_margin_seconds
            await conn.execute(TAKE_LEASE, webhook_id, now, lease, token)
            attempt = await conn.fetchval(START_ATTEMPT, head["id"], now)
        event = event_view(dict(head) | {"id": head["event_id"]})
        return Claim(webhook_id, token, head["id"], row["url"], secret, event, attempt)

    async def _deliver(self, claim: Claim) -> None:
        status, error = await self._post(claim)
        self.attempts_made += 1
        async with self._pool.acquire() as conn, conn.transaction():
            now = await conn.fetchval(CLOCK_NOW)
            if await conn.fetchval(END_LEASE, claim.webhook_id, claim.lease_token) is None:
                log.warning("webhooks: lease on %s lost during a delivery", claim.webhook_id)
            if error is None:
                await conn.execute(MARK_DELIVERED, claim.delivery_id, status, now)
                return
            outcome = await conn.fetchval(
                MARK_ATTEMPT_FAILED, claim.delivery_id, status, error[:MAX_ERROR_CHARS], now,
                self.settings.give_up_seconds, self.settings.backoff(claim.attempt),
            )
            if outcome == "failed":
                log.warning("webhooks: event %s to %s failed for good", claim.event["id"], claim.webhook_id)

    async def _post(self, claim: Claim) -> tuple[int | None, str | None]:
        """``(HTTP status, error)`` of one attempt; error is None for a 2xx."""
        assert self._http is not None
        body = dumps(claim.event).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Perks-Event-Id": claim.event["id"],
            "Perks-Timestamp": str(timestamp),
            "Perks-Signature": signature(claim.secret, timestamp, body),
        }
        try:
            async with self._http.post(claim.url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def _listen(self) -> None:
        delay = 1.0
        while True:
            try:
                conn = await asyncpg.connect(
                    self._url, timeout=10, server_settings={"application_name": LISTENER_APPLICATION_NAME}
                )
            except Exception:  # the database is away: try again, more and more slowly
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                await init_connection(conn)
                await conn.add_listener(CHANNEL, self._on_notify)
                delay = 1.0
                self.wake()  # anything written while not listening
                while not conn.is_closed():
                    await asyncio.sleep(self.settings.poll_seconds)
            except Exception as exc:  # never let the listener die: polling alone would make every event late
                log.warning("webhooks: event listener connection lost (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(delay)
            finally:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
                    if not conn.is_closed():
                        conn.terminate()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.wake()


DISPATCHER = web.AppKey("webhook_dispatcher", Dispatcher)


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run this worker's dispatcher while the application runs (``webhook_enabled=0`` in Config.extra: none)."""
    config = app[CONFIG]
    settings = DispatchSettings.from_config(config)
    if not settings.enabled:
        yield
        return
    dispatcher = Dispatcher(app[POOL], await resolve_database_url(config), config.secret, settings)
    app[DISPATCHER] = dispatcher
    async with running(dispatcher.run(), "perks-webhooks"):
        yield
