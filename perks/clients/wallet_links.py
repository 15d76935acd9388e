"""One-time links into a client's wallet: minted for bank staff, spent once by the client's browser, both audited."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from yarl import URL

from perks.audit import service as audit
from perks.core.auth import Principal
from perks.core.config import Config
from perks.core.errors import ApiError, NotFound

LINK_TTL = timedelta(minutes=15)
# Spent and expired links are kept a while for the audit trail's sake, then forgotten.
KEEP_SPENT_LINKS = timedelta(days=7)
OPEN_PATH = "/wallet/open"


def token_hash(token: str) -> bytes:
    """What is stored of a link's secret: its SHA-256 (the secret has 256 random bits, so no salt is needed)."""
    return hashlib.sha256(token.encode()).digest()


SELECT_CLIENT_STATUS = "SELECT status, session_generation FROM clients WHERE id = $1"
INSERT_LINK = """
INSERT INTO wallet_links (token_hash, client_id, created_by, created_at, expires_at, session_generation)
VALUES ($1, $2, $3, $4, $5, $6)
"""
FORGET_OLD_LINKS = "DELETE FROM wallet_links WHERE expires_at < $1"


async def mint(conn: asyncpg.Connection, actor: Principal, client_id: UUID, now: datetime) -> tuple[str, datetime]:
    """A new link secret for ``client_id`` and its expiry; the minting is audited. 403 for a blocked client."""
    client = await conn.fetchrow(SELECT_CLIENT_STATUS, client_id)
    if client is None:
        raise NotFound()
    if client["status"] != "active":
        raise ApiError("client_blocked", status=403)
    token = secrets.token_urlsafe(32)
    expires_at = now + LINK_TTL
    created_by = UUID(actor.id) if actor.is_staff else None
    async with conn.transaction():
        generation = client["session_generation"]
        await conn.execute(INSERT_LINK, token_hash(token), client_id, created_by, now, expires_at, generation)
        await conn.execute(FORGET_OLD_LINKS, now - KEEP_SPENT_LINKS)
        after = {"client_id": str(client_id), "expires_at": expires_at.isoformat()}
        await audit.record(conn, actor, "wallet_link.create", "client", client_id, None, after, at=now)
    return token, expires_at


# A blocked client's links open nothing; nor, once unblocked, do the links minted before the block (the block
# bumped the client's session generation, which the link must still match).
SPEND_LINK = """
UPDATE wallet_links w SET used_at = $2
FROM clients c
WHERE w.token_hash = $1 AND w.used_at IS NULL AND w.expires_at > $2
  AND c.id = w.client_id AND c.status = 'active' AND c.session_generation = w.session_generation
RETURNING w.client_id, c.session_generation
"""


async def spend(conn: asyncpg.Connection, token: str, now: datetime) -> tuple[UUID, int] | None:
    """The client a live, unused link of an active client opens and its session generation, marking the link
    used; ``None`` for anything else."""
    if not token or len(token) > 128:
        return None
    async with conn.transaction():
        row = await conn.fetchrow(SPEND_LINK, token_hash(token), now)
        if row is not None:
            client_id = row["client_id"]
            actor = Principal(id=str(client_id), role="client")
            after = {"client_id": str(client_id)}
            await audit.record(conn, actor, "wallet_link.use", "client", client_id, None, after, at=now)
            return client_id, row["session_generation"]
    return None


def public_base(config: Config) -> URL:
    """The service's public base URL: ``PERKS_PUBLIC_URL``, else http://PERKS_HOST:PERKS_PORT.

    Never the request's ``Host`` or ``X-Forwarded-*`` headers: whoever sends the request could choose them, and
    a link that opens a wallet must not point at an attacker's host."""
    if config.public_url:
        return URL(config.public_url)
    return URL.build(scheme="http", host=config.host, port=config.port)


def link_url(config: Config, token: str) -> str:
    """The absolute link under the public base URL (a path prefix in it is kept).

    The secret rides in the fragment, which browsers never send: it stays out of access logs and proxies."""
    base = public_base(config)
    path = base.path.rstrip("/") + OPEN_PATH
    return str(base.with_path(path).with_fragment(f"t={token}"))
