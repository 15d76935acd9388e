"""One-time links into a client's wallet: minted by bank staff through the API, spent once by the client's browser."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from aiohttp import web
from pydantic import BaseModel
from yarl import URL

from perks.audit import service as audit
from perks.core.appkeys import CLOCK, POOL
from perks.core.auth import Principal
from perks.core.endpoint import endpoint, principal_of
from perks.core.errors import NotFound
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response

LINK_TTL = timedelta(minutes=15)
# Spent and expired links are kept a while for the audit trail's sake, then forgotten.
KEEP_SPENT_LINKS = timedelta(days=7)
OPEN_PATH = "/wallet/open"

routes = web.RouteTableDef()


def token_hash(token: str) -> bytes:
    """What is stored of a link's secret: its SHA-256 (the secret has 256 random bits, so no salt is needed)."""
    return hashlib.sha256(token.encode()).digest()


SELECT_CLIENT = "SELECT 1 FROM clients WHERE id = $1"
INSERT_LINK = """
INSERT INTO wallet_links (token_hash, client_id, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
"""
FORGET_OLD_LINKS = "DELETE FROM wallet_links WHERE expires_at < $1"


async def mint(conn: asyncpg.Connection, actor: Principal, client_id: UUID, now: datetime) -> tuple[str, datetime]:
    """A new link secret for ``client_id`` and its expiry; the minting is audited."""
    if not await conn.fetchval(SELECT_CLIENT, client_id):
        raise NotFound()
    token = secrets.token_urlsafe(32)
    expires_at = now + LINK_TTL
    created_by = UUID(actor.id) if actor.is_staff else None
    async with conn.transaction():
        await conn.execute(INSERT_LINK, token_hash(token), client_id, created_by, now, expires_at)
        await conn.execute(FORGET_OLD_LINKS, now - KEEP_SPENT_LINKS)
        after = {"client_id": str(client_id), "expires_at": expires_at.isoformat()}
        await audit.record(conn, actor, "wallet_link.create", "client", client_id, None, after, at=now)
    return token, expires_at


SPEND_LINK = """
UPDATE wallet_links SET used_at = $2
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
RETURNING client_id
"""


async def spend(conn: asyncpg.Connection, token: str, now: datetime) -> UUID | None:
    """The client a live, unused link opens, marking it used; ``None`` for anything else."""
    if not token or len(token) > 128:
        return None
    async with conn.transaction():
        client_id = await conn.fetchval(SPEND_LINK, token_hash(token), now)
        if client_id is not None:
            actor = Principal(id=str(client_id), role="client")
            after = {"client_id": str(client_id)}
            await audit.record(conn, actor, "wallet_link.use", "client", client_id, None, after, at=now)
    return client_id


def link_url(request: web.Request, token: str) -> str:
    """The absolute link, on the host (and, behind a TLS proxy, the scheme) the request came through.

    The secret rides in the fragment, which browsers never send: it stays out of access logs and proxies."""
    origin = request.url.origin()
    if request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        origin = origin.with_scheme("https")
    return str(origin.join(URL(OPEN_PATH)).with_fragment(f"t={token}"))


class WalletLink(BaseModel):
    url: str
    expires_at: datetime


@routes.post("/api/v1/clients/{client_id}/wallet-links")
@endpoint(roles=("admin", "operator"), response=WalletLink, status=201, errors=("not_found",), tag="clients")
async def create_wallet_link(request: web.Request) -> web.Response:
    """Mint a one-time link that opens the client's wallet page in a browser.

    The link works once, within 15 minutes; only a hash of it is stored. Give it to the client only (it opens
    their wallet without a password)."""
    client_id = parse_id(request.match_info["client_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        token, expires_at = await mint(conn, principal_of(request), client_id, now)
    return json_response({"url": link_url(request, token), "expires_at": expires_at}, status=201)
